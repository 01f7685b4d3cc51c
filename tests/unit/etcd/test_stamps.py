"""The stamp naming what a restore or member replacement moves aside: two never share it."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from lifeboat.etcd.data_dir import unused_stamp

NOW = datetime(2026, 12, 2, 8, 30, 15, 999_000, tzinfo=timezone.utc)


def test_the_stamp_is_the_utc_second_when_nothing_was_moved_aside_then(tmp_path: Path) -> None:
    data_dir = tmp_path / "etcd"
    (tmp_path / "etcd.lifeboat-moved-20261202T083014Z").mkdir()  # a second earlier: no clash
    assert unused_stamp(NOW, data_dir) == "20261202T083015Z"


def test_a_restore_in_the_same_second_as_another_gets_a_stamp_of_its_own(tmp_path: Path) -> None:
    data_dir = tmp_path / "etcd"
    (tmp_path / "etcd.lifeboat-moved-20261202T083015Z").mkdir()
    assert unused_stamp(NOW, data_dir) == "20261202T083015Z-2"
    (tmp_path / "etcd.lifeboat-restored-20261202T083015Z-2").mkdir()  # a rollback's, same second
    os.symlink(tmp_path / "gone", tmp_path / "etcd.lifeboat-moved-20261202T083015Z-3")  # dangling: taken too
    assert unused_stamp(NOW, data_dir) == "20261202T083015Z-4"


def test_another_data_dirs_moved_aside_names_do_not_count(tmp_path: Path) -> None:
    (tmp_path / "etcd-2.lifeboat-moved-20261202T083015Z").mkdir()
    assert unused_stamp(NOW, tmp_path / "etcd") == "20261202T083015Z"

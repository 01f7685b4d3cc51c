"""Whether etcd uses a data dir: bbolt's lock on the db file."""

from __future__ import annotations

import fcntl
from pathlib import Path

from lifeboat.etcd.data_dir import db_locked


def test_locked_db_means_etcd_still_uses_the_data_dir(tmp_path: Path) -> None:
    db = tmp_path / "member" / "snap" / "db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"\0" * 4096)
    assert not db_locked(tmp_path)
    with db.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what bbolt does while etcd has the db open
        assert db_locked(tmp_path)
    assert not db_locked(tmp_path / "absent")

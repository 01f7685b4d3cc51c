"""Spools: private, removed on the way out, swept when their owner died, never while it lives."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lifeboat.errors import UsageError
from lifeboat.snapshot.spool import OWNER, remove_stale_spools, spool_dir


def test_spool_is_private_and_removed_on_an_exception(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), spool_dir("backup", tmp_path) as spool:
        (spool / "snapshot.db").write_bytes(b"x")
        assert stat.S_IMODE(spool.stat().st_mode) == 0o700
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_spool_of_a_dead_process_is_swept_and_a_live_one_is_kept(tmp_path: Path) -> None:
    # A child takes a spool and dies without cleaning up (os._exit skips every finally).
    code = ("import os, sys; from pathlib import Path; from lifeboat.snapshot.spool import spool_dir\n"
            f"cm = spool_dir('backup', Path({str(tmp_path)!r})); cm.__enter__(); os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True)
    dead = list(tmp_path.iterdir())
    assert len(dead) == 1 and (dead[0] / OWNER).is_file()
    with spool_dir("verify", tmp_path) as live:
        assert not dead[0].exists()
        assert remove_stale_spools(tmp_path) == []
        assert live.is_dir()


def test_half_made_spool_of_a_live_pid_is_kept_and_of_a_dead_pid_removed(tmp_path: Path) -> None:
    starting = tmp_path / f"lifeboat-backup-{os.getpid()}-abc"
    starting.mkdir()
    gone = tmp_path / "lifeboat-backup-999999999-abc"
    gone.mkdir()
    assert remove_stale_spools(tmp_path) == [gone]
    assert starting.is_dir()


def test_symlink_or_foreign_names_are_never_followed_or_removed(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data").write_text("keep")
    (tmp_path / "lifeboat-backup-999999999-evil").symlink_to(precious)
    (tmp_path / "other-999999999").mkdir()
    assert remove_stale_spools(tmp_path) == []
    assert (precious / "data").read_text() == "keep"


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_tmp_dir_that_is_not_a_directory_is_a_usage_error(tmp_path: Path, kind: str) -> None:
    where = tmp_path / "tmp"
    if kind == "file":
        where.write_text("")
    with pytest.raises(UsageError, match="--tmp-dir"), spool_dir("backup", where):
        pass

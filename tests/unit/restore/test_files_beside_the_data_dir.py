"""The files a restore keeps beside the data dir (its lock, its journal) are lifeboat's own, never
ones a symlink planted there leads to: whoever may write in the data dir's parent must not get root
to overwrite another file."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest

from lifeboat.clock import FakeClock
from lifeboat.errors import OperationFailed
from lifeboat.restore.journal import Journal, journal_path, load_journal, save_journal
from lifeboat.restore.lock import lock_path, restore_lock
from tests.support.cli import Cli


def test_a_symlink_at_the_locks_name_is_refused_and_the_file_it_points_at_is_untouched(tmp_path: Path) -> None:
    """The lock was opened following symlinks, then truncated and given the runner's pid: a
    symlink planted beside the data dir had root overwrite any file (/etc/shadow)."""
    precious = tmp_path / "precious"
    precious.write_text("keep me\n")
    data_dir = tmp_path / "etcd"
    lock_path(data_dir).symlink_to(precious)
    with pytest.raises(OperationFailed, match="is a symlink") as refused:
        with restore_lock(data_dir):
            pass
    assert str(lock_path(data_dir)) in str(refused.value) and "move it away" in str(refused.value)
    assert precious.read_text() == "keep me\n"


def test_the_lock_is_taken_on_a_regular_file_it_makes_or_finds(tmp_path: Path) -> None:
    data_dir = tmp_path / "etcd"
    with restore_lock(data_dir) as path:
        assert path.read_text().strip().isdigit()
    with restore_lock(data_dir):  # left in place on purpose, and taken again
        pass


def test_the_journal_is_never_written_through_a_symlink_at_its_temporary_name(tmp_path: Path) -> None:
    """The journal's temporary file was opened following symlinks and truncated: a symlink at
    ``.<data-dir>.lifeboat-restore.json.tmp`` had root overwrite the file it points at."""
    precious = tmp_path / "precious"
    precious.write_text("keep me\n")
    path = journal_path(tmp_path / "etcd")
    path.with_name(f".{path.name}.tmp").symlink_to(precious)
    journal = Journal("id", "c", str(tmp_path / "etcd"), "m0", "m0=u", "tok", "stamp")
    save_journal(path, journal)
    assert precious.read_text() == "keep me\n"
    assert load_journal(path) == journal and not path.is_symlink()


class _HolderWritesOnSleep(FakeClock):
    """A clock whose first sleep is when the lock's holder gets round to writing its pid."""

    def __init__(self, path: Path, pid: str) -> None:
        super().__init__()
        self.path, self.pid = path, pid

    def sleep(self, seconds: float) -> None:
        self.path.write_text(f"{self.pid}\n")
        super().sleep(seconds)


def test_a_run_refused_before_the_holder_wrote_its_pid_waits_for_the_pid(tmp_path: Path) -> None:
    data_dir = tmp_path / "etcd"
    path = lock_path(data_dir)
    holder = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # locked, pid not yet written
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(OperationFailed, match=r"\(pid 4242 holds"):
            with restore_lock(data_dir, _HolderWritesOnSleep(path, "4242")):
                pass
        path.write_text("")
        with pytest.raises(OperationFailed, match="a process that has not written its pid yet"):
            with restore_lock(data_dir, FakeClock()):
                pass
    finally:
        os.close(holder)


def _planted(tmp_path: Path, **changes: object) -> tuple[Path, Path, Path]:
    """A finished restore's data dir and its moved-aside old one, and a journal of it: (data dir, old, journal)."""
    data_dir, old = tmp_path / "etcd", tmp_path / "etcd.lifeboat-moved-20240102T030405Z"
    (data_dir / "member").mkdir(parents=True)
    (old / "member").mkdir(parents=True)
    fields: dict[str, object] = {
        "stamp": "20240102T030405Z", "done": ("preflight", "fetch-snapshot", "stop:etcd", "move-aside", "restore-data", "put-in-place"),
        "node_changed": True, "state": {"moved_aside": str(old)}, **changes}
    journal = Journal("20240101T000000Z-abcdef", "prod", str(data_dir), "m1", "m1=http://127.0.0.1:2380", "tok",
                      **fields)  # type: ignore[arg-type]
    save_journal(journal_path(data_dir), journal)
    return data_dir, old, journal_path(data_dir)


def _rollback(cli: Cli, data_dir: Path) -> tuple[int, str, str]:
    return cli("restore", "--rollback", "--supervisor", "none", "--no-start", "--data-dir", str(data_dir),
               "--name", "m1", "--initial-cluster", "m1=http://127.0.0.1:2380",
               "--initial-advertise-peer-urls", "http://127.0.0.1:2380")


@pytest.mark.parametrize("how", ["another-users", "writable-by-others", "symlink", "hard-link",
                                 "moved-aside-elsewhere", "moved-aside-another-name", "stamp-with-a-slash",
                                 "set-aside-elsewhere"])
def test_a_journal_lifeboat_did_not_write_steers_no_rollback(cli: Cli, tmp_path: Path, how: str) -> None:
    """--rollback renamed whatever the journal's moved_aside named onto the data dir: a journal planted
    by whoever may write the data dir's parent had root move any directory (/etc) into etcd's place."""
    victim = tmp_path / "victim"
    (victim / "member").mkdir(parents=True)
    changes: dict[str, object] = {
        "moved-aside-elsewhere": {"state": {"moved_aside": str(victim)}},
        "moved-aside-another-name": {"state": {"moved_aside": str(tmp_path / "etcd.lifeboat-moved-1")}},
        "stamp-with-a-slash": {"stamp": "../victim/x", "state": {}},
        "set-aside-elsewhere": {"rollback_stamp": "20240103T000000Z",
                                "state": {"moved_aside": str(tmp_path / "etcd.lifeboat-moved-20240102T030405Z"),
                                          "restored_set_aside": str(victim)}},
    }.get(how, {})  # type: ignore[assignment]
    data_dir, old, path = _planted(tmp_path, **changes)
    if how == "another-users":
        os.chown(path, 4242, 4242)
    elif how == "writable-by-others":
        path.chmod(0o666)
    elif how in ("symlink", "hard-link"):
        elsewhere = tmp_path / "elsewhere.json"
        path.rename(elsewhere)
        (path.symlink_to if how == "symlink" else path.hardlink_to)(elsewhere)
    before = sorted(p.name for p in tmp_path.iterdir())

    code, _out, err = _rollback(cli, data_dir)

    assert code == 3 and err.count("\n") == 1, err
    assert f"restore journal {path} is not one lifeboat wrote" in err and "move it away" in err, err
    assert sorted(p.name for p in tmp_path.iterdir() if p != lock_path(data_dir)) == before
    assert (victim / "member").is_dir() and (data_dir / "member").is_dir() and (old / "member").is_dir()


def test_lifeboats_own_journal_rolls_back(cli: Cli, tmp_path: Path) -> None:
    data_dir, old, path = _planted(tmp_path)
    (old / "member" / "old").touch()
    code, _out, err = _rollback(cli, data_dir)
    assert code == 0, err
    assert (data_dir / "member" / "old").exists() and not old.exists()


@pytest.mark.parametrize("flags", [["latest"], ["20240101T000000Z-abcdef"], ["--to-revision", "5"], ["--files"],
                                   ["--force"], ["--bump-revision", "0"], ["--restore-with", "tool"]])
def test_a_rollback_given_what_only_a_restore_takes_is_refused_before_anything_moves(
    cli: Cli, tmp_path: Path, flags: list[str]
) -> None:
    """'lifeboat restore ID --rollback' reads as "roll back to backup ID": it rolled back the journaled
    restore, ignoring the id (and --files, --to-revision, ...) without a word."""
    data_dir, old, path = _planted(tmp_path)
    journal = load_journal(path)
    code, _out, err = cli("restore", *flags, "--rollback", "--supervisor", "none", "--no-start",
                          "--data-dir", str(data_dir), "--name", "m1", "--initial-cluster", "m1=http://127.0.0.1:2380")
    assert code == 3 and err.count("\n") == 1 and "--rollback does not go with" in err, err
    assert load_journal(path) == journal and (old / "member").is_dir() and (data_dir / "member").is_dir()


def test_a_rollback_whose_journal_was_deleted_names_the_moved_aside_data_dirs(cli: Cli, tmp_path: Path) -> None:
    """A journal deleted by hand left the old data dir moved aside, and the rollback said "lifeboat
    restored nothing into DIR": the operator was told there was nothing to go back to."""
    data_dir, old, path = _planted(tmp_path)
    path.unlink()
    code, _out, err = _rollback(cli, data_dir)
    assert code == 3 and err.count("\n") == 1, err
    assert "restored nothing" not in err and str(old) in err and f"rename that one to {data_dir}" in err, err
    assert (old / "member").is_dir() and (data_dir / "member").is_dir()
    shutil.rmtree(old)
    assert "restored nothing" in _rollback(cli, data_dir)[2]

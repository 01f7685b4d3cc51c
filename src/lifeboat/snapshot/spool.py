"""Spools: the private temp dirs where a snapshot waits on local disk while lifeboat works on it.

A backup spools the snapshot etcd streams; verify, drills and ``k8s`` commands unpack a backup's
snapshot (decrypted: every Secret of the cluster) into one. A spool is
``<tmp>/lifeboat-<purpose>-<pid>-<random>/``, mode 0700, holding ``.owner``: a file its process
keeps ``flock``-ed for as long as it runs. The kernel drops that lock when the process ends,
however it ends (kill -9, the OOM killer), so a spool whose lock can be taken was left by a dead
run. Every new spool first removes such leftovers from the same temp dir; the spool of a live run
is never touched. On a normal exit, an exception or SIGTERM, the spool removes itself.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lifeboat.errors import UsageError

OWNER = ".owner"
# What to do when the temp dir has no room: both ways of naming another one.
ROOM_HINT = "pass --tmp-dir or set the config file's backup.tmp-dir"
_NAME = re.compile(r"^lifeboat-[a-z0-9]+-(\d+)-")


@contextmanager
def spool_dir(purpose: str, tmp_dir: Path | None = None) -> Iterator[Path]:
    """A fresh spool under ``tmp_dir`` (default: the system temp dir), removed on the way out."""
    base = _usable_tmp_dir(tmp_dir)
    remove_stale_spools(base)
    path = Path(tempfile.mkdtemp(prefix=f"lifeboat-{purpose}-{os.getpid()}-", dir=base))
    # Locked under another name first: a sweeper only opens ".owner", which is locked from birth.
    pending = path / (OWNER + ".new")
    fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.rename(pending, path / OWNER)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def remove_stale_spools(base: Path) -> list[Path]:
    """Remove the spools in ``base`` whose owner is gone; return them."""
    removed: list[Path] = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        match = _NAME.match(name)
        path = base / name
        if match and _ours(path) and not _owner_alive(path, int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _usable_tmp_dir(tmp_dir: Path | None) -> Path:
    if tmp_dir is None:
        return Path(tempfile.gettempdir())
    if not tmp_dir.exists():
        raise UsageError(f"temp dir {tmp_dir} (--tmp-dir or the config file's backup.tmp-dir) does not exist; "
                         "create it or name another directory")
    if not tmp_dir.is_dir():
        raise UsageError(f"temp dir {tmp_dir} (--tmp-dir or the config file's backup.tmp-dir) is not a "
                         "directory; name a directory")
    return tmp_dir


def _ours(path: Path) -> bool:
    """A real directory (not a symlink planted in /tmp) owned by this user."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()


def _owner_alive(path: Path, pid: int) -> bool:
    try:
        fd = os.open(path / OWNER, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        # Created but not locked yet (a run starting right now), or its owner died in between.
        return _pid_alive(pid)
    except OSError:
        return True  # unreadable: never remove what we cannot prove dead
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True  # locked: its run is alive (or the lock cannot be tested: leave it)
    finally:
        os.close(fd)
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

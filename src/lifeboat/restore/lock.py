"""One restore (or rollback, or resume) of a data dir at a time.

``<data-dir>.lifeboat-restore.lock`` beside the data dir is locked with ``flock(LOCK_EX)`` for
the whole run and holds the runner's pid. The kernel drops the lock when the process ends,
however it ends (kill -9 included), so a lock never outlives its holder and the file is never
removed (removing a lock file races with the next run's open).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lifeboat.clock import Clock, SystemClock, wait_for
from lifeboat.errors import OperationFailed

# The holder locks, then writes its pid: a run refused in between waits this long for the pid.
HOLDER_PID_WAIT = 1.0


def lock_path(data_dir: Path) -> Path:
    return data_dir.with_name(data_dir.name + ".lifeboat-restore.lock")


@contextmanager
def restore_lock(data_dir: Path, clock: Clock | None = None) -> Iterator[Path]:
    """Hold the data dir's restore lock; OperationFailed naming the holder if another run has it."""
    path = lock_path(data_dir)
    try:
        # Never through a symlink: the file is truncated and written, and whoever can write beside
        # the data dir could otherwise point it at any file root may write.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OperationFailed(f"the restore lock {path} is a symlink, not lifeboat's lock file; "
                                  "move it away, then re-run") from None
        raise OperationFailed(f"cannot open the restore lock {path}: {exc.strerror}; "
                              "check that directory's permissions") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OperationFailed(f"the restore lock {path} is not a regular file; move it away, then re-run")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OperationFailed(f"cannot lock {path}: {exc.strerror}") from None
            raise OperationFailed(
                f"another lifeboat restore or rollback of {data_dir} is running ({_holder(fd, clock or SystemClock())} holds "
                f"{path}); wait for it to finish, then re-run"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int, clock: Clock) -> str:
    def pid() -> str | None:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return text if text.isdigit() else None

    found = wait_for(clock, pid, HOLDER_PID_WAIT, 0.01)
    return f"pid {found}" if found else "a process that has not written its pid yet"

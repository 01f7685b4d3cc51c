"""A member's data dir on this host: whether a running etcd holds it, and the names it is
moved aside under.

bbolt takes an exclusive ``flock`` on the db file ``member/snap/db`` for as long as a writer
has it open (bbolt's ``flock`` in bolt_unix.go), so a free lock means no etcd uses the data
dir, even one that stopped listening but has not exited yet.
"""

from __future__ import annotations

import errno
import fcntl
import os
from datetime import datetime, timezone
from pathlib import Path

from lifeboat.errors import OperationFailed

# etcd preallocates every WAL segment to wal.SegmentSizeBytes = 64 * 1000 * 1000 bytes (64 MB, not MiB).
WAL_SEGMENT_BYTES = 64 * 1000 * 1000


def db_locked(data_dir: Path) -> bool:
    """Whether a process holds bbolt's exclusive lock on ``data_dir``'s db file."""
    db = data_dir / "member" / "snap" / "db"
    try:
        fd = os.open(db, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise OperationFailed(f"cannot open {db} to see whether etcd uses it: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise OperationFailed(f"cannot test the lock on {db}: {exc.strerror}") from None
    finally:
        os.close(fd)  # closing drops our lock too
    return False


def utc_stamp(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def unused_stamp(now: datetime, data_dir: Path) -> str:
    """The stamp naming what a restore, rollback or member replacement moves or sets aside from
    ``data_dir``: :func:`utc_stamp`, with ``-2``, ``-3``, ... appended while a sibling moved or
    set aside under it exists (two within the same second): no two share a moved-aside name."""
    stamp = candidate = utc_stamp(now)
    n = 1
    while any(os.path.lexists(data_dir.with_name(f"{data_dir.name}.lifeboat-{kind}-{candidate}"))
              for kind in ("moved", "restored")):
        n += 1
        candidate = f"{stamp}-{n}"
    return candidate

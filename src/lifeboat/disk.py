"""Free disk space: the one place lifeboat asks a filesystem how much room it has.

Backup, verify, drill and restore each write a few large files (the snapshot, a restored db);
each says before it starts how much room it needs and where, and refuses when the filesystem
lacks it, instead of failing halfway with a full disk. The check takes a :data:`FreeSpace`
seam so that tests can give it a nearly full disk without filling one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from lifeboat.errors import OperationFailed

FreeSpace = Callable[[Path], int]

# Beyond the files counted: a filesystem's metadata, a WAL segment, temp names.
MARGIN = 64 << 20


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``path`` (or its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def require_room(path: Path, needed: int, what: str, hint: str,
                 free_space: FreeSpace = free_bytes) -> None:
    """Refuse (OperationFailed) unless ``path``'s filesystem has ``needed`` bytes and a margin free.

    ``what`` says what needs the room ("the restore: the snapshot and the restored db"),
    ``hint`` what to do instead ("pass --tmp-dir").
    """
    need = needed + MARGIN
    free = free_space(path)
    if free < need:
        raise OperationFailed(f"{what} needs about {size_text(need)} free in {path}, which has "
                              f"{size_text(free)}; free space or {hint}")


def size_text(n: int) -> str:
    """``n`` bytes in MiB or GiB, as the messages above print them."""
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n >> 20} MiB"

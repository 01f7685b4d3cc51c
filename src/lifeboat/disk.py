"""Free disk space: the one place lifeboat asks a filesystem how much room it has.

Backup, verify, drill and restore each write a few large files (the snapshot, a restored db);
each says before it starts how much room it needs and where, and refuses when the filesystem
lacks it (:class:`~lifeboat.errors.NoRoom`, exit 5), instead of failing halfway with a full
disk. The CLI prints each need before the work starts, and puts it in its JSON output. The check
takes a :data:`FreeSpace` seam so that tests can give it a nearly full disk without filling one.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lifeboat.errors import NoRoom

FreeSpace = Callable[[Path], int]

# Beyond the files counted: a filesystem's metadata, a WAL segment, temp names.
MARGIN = 64 << 20


def no_room_left(error: OSError, hint: str) -> NoRoom | None:
    """The NoRoom (exit 5) a write that failed with a full filesystem or quota means; None for another error."""
    if error.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    where = f" writing {error.filename}" if error.filename else ""
    return NoRoom(f"{error.strerror or 'no space left on device'}{where}; free space on that filesystem and {hint}")


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``path`` (or its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


@dataclass(frozen=True)
class RoomNeeded:
    """What one operation needs free on one filesystem, measured before it starts."""

    what: str  # "backup 2026...: the spooled snapshot"
    path: Path
    need: int  # bytes, the margin included
    free: int  # bytes free there when measured

    @property
    def enough(self) -> bool:
        return self.free >= self.need

    def text(self) -> str:
        return f"{self.what} needs about {size_text(self.need)} free in {self.path} ({size_text(self.free)} free)"

    def to_dict(self) -> dict[str, object]:
        return {"what": self.what, "path": str(self.path), "need_bytes": self.need, "free_bytes": self.free}

    def require(self, hint: str) -> None:
        """Refuse (:class:`NoRoom`, exit 5) unless there is enough; ``hint`` says what to do instead."""
        if not self.enough:
            raise NoRoom(f"{self.what} needs about {size_text(self.need)} free in {self.path}, which has "
                         f"{size_text(self.free)}; free space or {hint}")


RoomReport = Callable[[RoomNeeded], None]


def measure_room(path: Path, needed: int, what: str, free_space: FreeSpace = free_bytes) -> RoomNeeded:
    """What ``needed`` bytes (and the margin) written under ``path`` need, against what is free there."""
    return RoomNeeded(what, path, needed + MARGIN, free_space(path))


def require_room(path: Path, needed: int, what: str, hint: str,
                 free_space: FreeSpace = free_bytes, report: RoomReport = lambda room: None) -> RoomNeeded:
    """Refuse (NoRoom) unless ``path``'s filesystem has ``needed`` bytes and a margin free.

    ``what`` says what needs the room ("the restore: the snapshot and the restored db"),
    ``hint`` what to do instead ("pass --tmp-dir"). ``report`` is told the need first, enough or not.
    """
    room = measure_room(path, needed, what, free_space)
    report(room)
    room.require(hint)
    return room


def size_text(n: int) -> str:
    """``n`` bytes in MiB or GiB, as the messages above print them."""
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n >> 20} MiB"

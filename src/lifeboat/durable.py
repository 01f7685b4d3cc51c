"""Making a change on local disk survive a crash.

A rename or a new file is durable only once the directory holding it is fsynced too
(POSIX leaves directory entries to the directory's own fsync; Linux's ext4 and xfs do the same).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Flush ``directory``'s entries (a rename into or out of it, a new file) to disk."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(path: Path, data: bytes) -> None:
    """Make ``path`` hold ``data`` (owner-only): written beside it, fsynced, renamed onto it,
    the directory fsynced. A crash leaves the old file or the new one, never a torn one."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    fsync_dir(path.parent)

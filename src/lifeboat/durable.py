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

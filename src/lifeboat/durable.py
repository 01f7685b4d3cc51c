"""Making a change on local disk survive a crash.

A rename or a new file is durable only once the directory holding it is fsynced too
(POSIX leaves directory entries to the directory's own fsync; Linux's ext4 and xfs do the same).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

# linux/fcntl.h and linux/fs.h: renameat2's "current directory" and its flag that refuses an
# existing target.
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def fsync_dir(directory: Path) -> None:
    """Flush ``directory``'s entries (a rename into or out of it, a new file) to disk."""
    _fsync(directory, os.O_DIRECTORY)


def replace_durably(path: Path, data: bytes) -> None:
    """Make ``path`` hold ``data`` (owner-only): written beside it, fsynced, renamed onto it,
    the directory fsynced. A crash leaves the old file or the new one, never a torn one."""
    temporary = path.with_name(f".{path.name}.tmp")
    # Made afresh, never opened through what is there (a crash's leftover, or a symlink someone
    # who may write in the directory planted to have another file overwritten).
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    fsync_dir(path.parent)


def part_path(path: Path) -> Path:
    """``<path>.part``: where a file is written before :func:`install_durably` renames it to ``path``."""
    return path.with_name(path.name + ".part")


def install_durably(part: Path, path: Path) -> None:
    """Rename the finished file ``part`` onto ``path`` (replacing it) for good: ``part`` is
    fsynced first, so a crash never leaves ``path`` naming a file whose data is not on disk,
    and its directory after."""
    _fsync(part)
    os.replace(part, path)
    fsync_dir(path.parent)


def _fsync(path: Path, flags: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class NotFlushed(OSError):
    """The rename was done, but a directory holding it could not be fsynced: a power cut may undo it."""


def move_durably(source: Path, destination: Path) -> None:
    """Rename ``source`` to ``destination`` for good (both directories fsynced after);
    FileExistsError when something is at ``destination``, which is never replaced, and
    :class:`NotFlushed` when the rename was done but not flushed."""
    rename_no_replace(source, destination)
    try:
        fsync_dir(destination.parent)
        if source.parent != destination.parent:
            fsync_dir(source.parent)
    except OSError as exc:
        raise NotFlushed(exc.errno, exc.strerror, str(destination.parent)) from exc


def rename_no_replace(source: Path, destination: Path) -> None:
    """Rename ``source`` to ``destination``; FileExistsError when ``destination`` exists.

    A plain rename(2) of a directory replaces an empty directory at the target, and of a file
    any file there; looking first leaves a window in which another process can make the
    name. renameat2's RENAME_NOREPLACE makes the kernel refuse an existing target atomically.
    """
    renameat2 = _renameat2()
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(destination), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        # ENOSYS: a kernel older than 3.15; EINVAL: a filesystem without RENAME_NOREPLACE (or a
        # rename the plain one refuses with EINVAL too, such as a directory into itself).
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code), str(source), None, str(destination))
    # Without renameat2, look, then rename: the window between the two stays open.
    if os.path.lexists(destination):  # a dangling symlink is taken too
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(source), None, str(destination))
    os.rename(source, destination)


@cache
def _renameat2() -> Callable[[int, bytes, int, bytes, int], int] | None:
    """libc's renameat2 (glibc 2.28 and later), or None."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    function.restype = ctypes.c_int
    renameat2: Callable[[int, bytes, int, bytes, int], int] = function
    return renameat2

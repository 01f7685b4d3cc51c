"""Making a change on local disk survive a crash.

A rename or a new file is durable only once the directory holding it is fsynced too
(POSIX leaves directory entries to the directory's own fsync; Linux's ext4 and xfs do the same).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from lifeboat.errors import OperationFailed, UsageError

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


class TargetInUse(OperationFailed):
    """Another process is writing the same file (it holds the file's ``.<name>.lock``)."""


@contextmanager
def writing_to(path: Path, leftovers: Callable[[Path], list[Path]] = lambda part: []) -> Iterator[Path]:
    """Hold ``path`` for this process while it writes ``<path>.part`` (yielded) to install it.

    Two processes writing one ``path`` would write one ``.part`` file, and each could rename
    the other's half-written bytes onto ``path``. The claim is an ``flock`` on ``.<name>.lock``
    beside ``path``, which the kernel drops when the process ends however it ends (kill -9), so
    :class:`TargetInUse`, naming the holder's pid, means a live run holds it; once held, what a
    killed run left (``.part``, and the paths ``leftovers`` names for a part, such as staging
    directories) can be no live run's and is removed before anything is written. ``.part`` is
    removed on the way out, and the lock file with it. A directory that takes no lock file
    (not writable, a pseudo file system) is a :class:`~lifeboat.errors.UsageError`.
    """
    lock = path.with_name(f".{path.name}.lock")
    fd = _locked(lock, path)
    part = part_path(path)
    try:
        for stale in (part, *leftovers(part)):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink(missing_ok=True)
        yield part
    finally:
        part.unlink(missing_ok=True)
        # Removed while locked: a run that opened this lock file before and locks it after
        # finds it unlinked, and opens the path again (_locked).
        lock.unlink(missing_ok=True)
        os.close(fd)


def _locked(lock: Path, path: Path) -> int:
    """An fd of ``lock`` holding its ``flock``, the file still at that name once locked."""
    while True:
        try:
            fd = flock_or_holder(lock)
        except OSError as exc:  # a directory this user may not write, a read-only or pseudo file system
            raise UsageError(f"cannot write {path}: {exc.strerror} ({lock.name} beside it); give a path in a "
                             "directory this user may write") from None
        if isinstance(fd, str):
            raise TargetInUse(f"{path} is being written by another process (pid {fd or 'unknown'}, holding "
                              f"{lock.name}); wait for it to end, or give another path")
        try:
            held, named = os.fstat(fd), os.stat(lock, follow_symlinks=False)
            if (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder finished and removed it between our open and our lock


def flock_or_holder(lock: Path) -> int | str:
    """An fd of the file ``lock`` (created owner-only) holding an exclusive ``flock`` on it, or,
    when another process holds it, what that one wrote in it (its pid; "" if nothing yet)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        return holder
    return fd


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

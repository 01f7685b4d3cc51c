"""Objects as files under one directory (``file://PATH``).

A write goes to a temp file in the target's directory, is fsynced, and is then renamed
onto the key (``os.replace``) or, for create-only, hard-linked onto it (``os.link`` fails
when the name exists, so two writers can never both win). The directory is fsynced after
either so the new name survives a power loss. Temp files carry the :data:`TEMP_PREFIX`
name, are removed on failure and never appear in a listing.

A key and a key below it (``a`` and ``a/b``) cannot both exist here, as a name cannot be a
file and a directory at once; writing the second raises :class:`OperationFailed`.

The directory itself is made only by writing an object at its top (the repository's marker,
when lifeboat creates a repository). A key below a folder is never written while the directory
is not there: that is a disk or network share not mounted (or a directory moved away), and its
objects must not land on the mount point, hidden once the share is back; such a write raises
:class:`RepositoryUnavailable`.
"""

from __future__ import annotations

import builtins

import errno
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from lifeboat.durable import fsync_dir
from lifeboat.errors import (
    NotFound,
    OperationFailed,
    RepositoryUnavailable,
    UsageError,
)
from lifeboat.store.base import (
    IncompleteUpload, ObjectInfo, StoreBase, after_in_folder, check_folder, check_key, check_listing,
)

TEMP_PREFIX = ".lifeboat-tmp-"

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)


class LocalStore(StoreBase):
    """A repository in a local (or mounted network) directory."""

    def __init__(self, root: Path) -> None:
        self._root = Path(os.path.abspath(root))
        super().__init__(self._root.as_uri())

    @property
    def root(self) -> Path:
        return self._root

    def _path(self, key: str) -> Path:
        check_key(key)
        if any(part.startswith(TEMP_PREFIX) for part in key.split("/")):
            raise UsageError(f"invalid object key {key!r}: names starting {TEMP_PREFIX!r} are reserved")
        path = self._root / key
        # A symlink planted inside the repository must not lead a key outside it.
        real_root = os.path.realpath(self._root)
        if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
            raise UsageError(f"object key {key!r} resolves outside the repository {self._url}")
        return path

    @contextmanager
    def _translated(self, action: str, key: str) -> Iterator[None]:
        """Turn an OSError from our own file operations into a lifeboat error."""
        try:
            yield
        except FileNotFoundError:
            raise self._not_found(key) from None
        except (IsADirectoryError, NotADirectoryError) as exc:
            if action == "writing":
                raise self._error(action, key, exc) from exc
            # Only a directory (or a file) stands where the key would be: no such object.
            raise self._not_found(key) from None
        except OSError as exc:
            raise self._error(action, key, exc) from exc

    def _error(self, action: str, key: str, exc: OSError) -> Exception:
        where = f"{action} {key} in {self._url}"
        if exc.errno in _DISK_FULL:
            return OperationFailed(f"{where} failed: the disk is full; free space and retry")
        if exc.errno in _REFUSED:
            return RepositoryUnavailable(
                f"{where} failed: {exc.strerror}; check ownership and mode of {self._root}"
            )
        if exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.EEXIST):
            return OperationFailed(
                f"{where} failed: the key collides with a directory or file of another key"
            )
        return OperationFailed(f"{where} failed: {exc.strerror or exc}")

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        return self._put(key, chunks, create_only=False)

    def put_bytes(self, key: str, data: bytes, *, create_only: bool = False) -> ObjectInfo:
        return self._put(key, (data,), create_only=create_only)

    def _put(self, key: str, chunks: Iterable[bytes], *, create_only: bool) -> ObjectInfo:
        path = self._path(key)
        if "/" in key and not self._root.is_dir():
            raise RepositoryUnavailable(
                f"{self._url} is not there (a disk or share not mounted, or the directory moved); "
                f"{key} was not written")
        fd, temp = self._temp_file(path.parent, key)
        published = False
        try:
            size = self._write_chunks(fd, key, chunks)
            with self._translated("writing", key):
                os.fsync(fd)
                os.close(fd)
                fd = -1
                self._publish(temp, path, key, create_only)
                published = True
                fsync_dir(path.parent)
        finally:
            if fd >= 0:
                os.close(fd)
            _remove_quietly(temp)
            if not published:  # no empty directory of a failed write is left (a new backup's, each attempt)
                self._prune_empty_dirs(path.parent)
        return ObjectInfo(key, size)

    def _temp_file(self, directory: Path, key: str) -> tuple[int, str]:
        """A new temp file in ``directory``, made with its parents.

        A failed write or a delete in the same directory removes it once it is empty, maybe
        between its making and the temp file's: it is made again then.
        """
        retries = 2
        with self._translated("writing", key):
            while True:
                _make_dirs(directory)
                try:
                    return tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
                except FileNotFoundError:
                    if not retries:
                        raise
                    retries -= 1

    def _write_chunks(self, fd: int, key: str, chunks: Iterable[bytes]) -> int:
        size = 0
        for chunk in chunks:  # an exception from the caller's iterable propagates unchanged
            with self._translated("writing", key):
                _write_all(fd, chunk)
            size += len(chunk)
        return size

    def _publish(self, temp: str, path: Path, key: str, create_only: bool) -> None:
        if not create_only:
            os.replace(temp, path)
            return
        try:
            os.link(temp, path)
        except FileExistsError:
            raise self._already_exists(key) from None

    def get_stream(self, key: str, chunk_size: int = 4 << 20) -> Iterator[bytes]:
        path = self._path(key)
        with self._translated("reading", key):
            file = path.open("rb")
        return self._read_chunks(file, key, chunk_size)

    def _read_chunks(self, file: BinaryIO, key: str, chunk_size: int) -> Iterator[bytes]:
        try:
            while True:
                with self._translated("reading", key):
                    chunk = file.read(chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            file.close()

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        with self._translated("reading", key):
            return path.read_bytes()

    def get_range(self, key: str, start: int, end: int) -> bytes:
        path = self._path(key)
        with self._translated("reading", key):
            fd = os.open(path, os.O_RDONLY)
            try:
                return os.pread(fd, max(end - start, 0), start)
            finally:
                os.close(fd)

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            with self._translated("inspecting", key):
                info = path.stat()
        except NotFound:
            return None
        if not _is_file(info.st_mode):
            return None
        return ObjectInfo(key, info.st_size, _modified(info), _version(info))

    def list(self, prefix: str = "", *, after: str = "") -> Iterator[ObjectInfo]:
        check_listing(prefix, after)
        # Only the directory that holds the prefix's last segment needs walking.
        start = self._root / prefix.rpartition("/")[0]
        found: list[ObjectInfo] = []
        with self._translated("listing", prefix or "/"):
            for directory, dirnames, filenames in os.walk(start, onerror=_raise):
                rel = Path(directory).relative_to(self._root).as_posix()
                folder = "" if rel == "." else f"{rel}/"
                # A folder before ``after`` is skipped unread, not read and filtered.
                dirnames[:] = [d for d in dirnames if not d.startswith(TEMP_PREFIX)
                               and after_in_folder(folder + d, prefix, after)]
                for name in filenames:
                    key = folder + name
                    if (name.startswith(TEMP_PREFIX) or not key.startswith(prefix)
                            or not after_in_folder(key, prefix, after)):
                        continue
                    info = os.stat(os.path.join(directory, name), follow_symlinks=False)
                    if _is_file(info.st_mode):
                        found.append(ObjectInfo(key, info.st_size, _modified(info), _version(info)))
        found.sort(key=lambda o: o.key)
        return iter(found)

    def folders(self, prefix: str = "") -> tuple[str, ...]:
        check_folder(prefix)
        names: list[str] = []
        with self._translated("listing", prefix or "/"):
            try:
                entries = list(os.scandir(self._root / prefix))
            except (FileNotFoundError, NotADirectoryError):
                return ()
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(TEMP_PREFIX):
                    names.append(entry.name)
        return tuple(sorted(names))

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            with self._translated("deleting", key):
                path.unlink()
        except NotFound:
            return
        self._prune_empty_dirs(path.parent)

    def incomplete_uploads(self, prefix: str = "") -> builtins.list[IncompleteUpload]:
        """The temp files under ``prefix`` of writes whose process died (kill -9, power loss), by age.

        A live write keeps its temp file's mtime fresh: every chunk it writes updates it.
        """
        found: builtins.list[IncompleteUpload] = []
        with self._translated("listing", prefix or "/"):
            for directory, _dirnames, filenames in os.walk(self._root / check_folder(prefix), onerror=_raise):
                for name in filenames:
                    if not name.startswith(TEMP_PREFIX):
                        continue
                    info = os.stat(os.path.join(directory, name), follow_symlinks=False)
                    if _is_file(info.st_mode):
                        rel = Path(directory, name).relative_to(self._root).as_posix()
                        when = datetime.fromtimestamp(info.st_mtime, timezone.utc)
                        found.append(IncompleteUpload(rel, info.st_size, when))
        found.sort(key=lambda u: (u.modified, u.name))
        return found

    def remove_incomplete(self, upload: IncompleteUpload) -> None:
        path = self._root / upload.name
        if not path.name.startswith(TEMP_PREFIX) or ".." in Path(upload.name).parts:
            raise UsageError(f"{upload.name} is not a temp file of {self._url}")
        try:
            with self._translated("deleting", upload.name):
                path.unlink()
        except NotFound:
            return
        self._prune_empty_dirs(path.parent)

    def _prune_empty_dirs(self, directory: Path) -> None:
        """Remove directories emptied by a delete, up to the root (best effort)."""
        while directory != self._root and self._root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _make_dirs(directory: Path) -> None:
    """Create ``directory`` and missing parents, each made durable in its own parent."""
    if directory.is_dir():
        return
    _make_dirs(directory.parent)
    try:
        # Owner-only whatever the umask: a repository holds every Secret of the cluster
        # (objects are 0600 already: mkstemp creates them so).
        directory.mkdir(0o700)
    except FileExistsError:
        if not directory.is_dir():
            raise
        return
    fsync_dir(directory.parent)



def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass  # already renamed into place, or the failure being reported is the real one


def _is_file(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _modified(info: os.stat_result) -> datetime:
    return datetime.fromtimestamp(info.st_mtime, timezone.utc)


def _version(info: os.stat_result) -> str:
    # Every write goes to a new file renamed over the old one: a new inode, a new mtime.
    return f"{info.st_ino:x}-{info.st_mtime_ns:x}"


def _raise(exc: OSError) -> None:
    # A prefix whose directory does not exist (or is a file) simply has no objects.
    if not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        raise exc

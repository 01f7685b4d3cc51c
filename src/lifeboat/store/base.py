"""The object-store seam: what every backend (memory, file, s3) promises.

Keys are ``/``-separated relative names (``clusters/prod/backups/<id>/snapshot.db.zst``):
non-empty segments of letters, digits and ``._-+=@,:``, never starting or ending with ``/``,
no segment ``.`` or ``..``, at most 1024 characters. Backends reject others with
:class:`~lifeboat.errors.UsageError` (see :func:`check_key`). The restricted alphabet keeps a key
the same string on every backend, with no percent-encoding and no path tricks.

Contract, checked by ``tests/contract/`` against every backend:

* ``put_stream`` writes an object from an iterable of chunks without holding it whole in
  memory. The object becomes visible only when the whole stream was written: an exception
  from the iterable or from the backend leaves no object under that key (a partial upload
  is aborted / its temp file removed). An exception raised by the iterable propagates
  unchanged; the backend's own failures are translated into :mod:`lifeboat.errors`.
  Writing an existing key replaces it atomically (readers see the old or the new object).
* ``put_bytes(..., create_only=True)`` is atomic: when the key already exists it raises
  :class:`~lifeboat.errors.AlreadyExists` and leaves the existing object untouched. The
  catalog uses it to write a backup's manifest exactly once.
* ``get_stream`` yields the object's bytes in non-empty chunks of at most ``chunk_size``
  bytes; ``get_bytes`` returns them whole (for small objects only). A missing
  key raises :class:`~lifeboat.errors.NotFound` from the call itself, before iteration.
* ``get_range(key, start, end)`` returns the bytes ``start`` up to (not including) ``end``
  of the object (``bytes``, or a read-only ``memoryview`` of the client's own buffer: no
  copy), fewer when the object ends before ``end``; a missing key raises
  :class:`~lifeboat.errors.NotFound`. Ranges of one object may be read from several threads
  at once (a restore downloads a large object that way).
* ``list`` yields every object whose key starts with ``prefix`` (a plain string prefix:
  ``"a/b"`` matches ``a/b/c`` and ``a/bc``), sorted by key. With ``after`` (only with a
  folder as prefix: empty or ending in ``/``), only objects whose first segment below the
  folder sorts after ``after``: ``list("b/", after="0002")`` skips ``b/0001/x`` and
  ``b/0002/x`` and returns ``b/0003/x``. Such a listing costs what it returns, not what the
  store holds (S3's ``start-after``, which SeaweedFS applies to the folder's entry names).
* ``folders`` names the folders directly under ``prefix`` (which is empty or ends with ``/``):
  the distinct next segments of keys that continue past it with a further ``/``, sorted. It
  reads one level of the tree, not every key below it (S3's delimiter listing).
* ``list`` and ``stat`` report each object's ``modified`` time: when it was last written
  (became visible), by the store's own clock, timezone-aware. Prune measures how old an
  uncommitted backup's objects are by it, so a backup still being written is left alone.
* ``delete`` of a missing key is not an error (deletes are retried after interruptions).
  ``delete_many`` deletes many keys in as few requests as the store allows (S3: 1,000 a
  request), batch after batch in the order given: interrupted, it has deleted some of the batch
  under way and none after it.
* Unreachable store, bad credentials or a missing bucket raise
  :class:`~lifeboat.errors.RepositoryUnavailable`; a full disk raises
  :class:`~lifeboat.errors.OperationFailed`.
"""

from __future__ import annotations

import builtins

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from lifeboat.errors import AlreadyExists, NotFound, UsageError

MAX_KEY_LENGTH = 1024
# Where a store writes the probes it checks its server with (an S3 store's create-only probe):
# each lives for a request or two and is removed; not repository content.
PROBE_FOLDER = ".lifeboat-bucket-probe/"
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+=@,:/")


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise :class:`UsageError`."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise UsageError(f"invalid object key {key[:80]!r}: must be 1 to {MAX_KEY_LENGTH} characters")
    _check_chars(key)
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise UsageError(
            f"invalid object key {key[:80]!r}: use a relative name without empty, '.' or '..' parts"
        )
    return key


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can start valid keys (``""`` and a trailing ``/`` allowed)."""
    if not prefix:
        return prefix
    _check_chars(prefix)
    parts = prefix.split("/")
    if any(part in ("", ".", "..") for part in parts[:-1]) or parts[-1] == "..":
        raise UsageError(
            f"invalid key prefix {prefix[:80]!r}: use a relative name without empty, '.' or '..' parts"
        )
    return prefix


def check_folder(prefix: str) -> str:
    """Return ``prefix`` if it names a folder: empty, or a valid prefix ending with ``/``."""
    if prefix and not prefix.endswith("/"):
        raise UsageError(f"invalid folder {prefix[:80]!r}: a folder is empty or ends with '/'")
    return check_prefix(prefix)


def check_listing(prefix: str, after: str) -> str:
    """Return ``prefix`` if it is valid, and a folder when ``after`` is given."""
    return check_folder(prefix) if after else check_prefix(prefix)


def after_in_folder(key: str, folder: str, after: str) -> bool:
    """Whether ``key``'s first segment below ``folder`` sorts after ``after`` (always, without one)."""
    return not after or key[len(folder):].partition("/")[0] > after


def folder_of(key: str, prefix: str) -> str | None:
    """The folder under ``prefix`` that ``key`` lies in, or None when it is a plain object there."""
    head, slash, _ = key[len(prefix):].partition("/")
    return head if slash and key.startswith(prefix) else None


def _check_chars(name: str) -> None:
    bad = set(name) - _KEY_CHARS
    if bad:
        shown = "".join(sorted(bad))[:10]
        raise UsageError(
            f"invalid object key {name[:80]!r}: characters {shown!r} are not allowed "
            "(use letters, digits and ._-+=@,:/)"
        )


@dataclass(frozen=True)
class IncompleteUpload:
    """An upload that was started and neither completed nor aborted (its writer died)."""

    name: str  # where it lies, relative to the store's root; not a key
    size: int
    modified: datetime  # when its writer last wrote to it (UTC)
    upload_id: str = ""  # an S3 multipart upload's id; empty for a local temp file


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one stored object."""

    key: str
    size: int
    # When it was written, by the store's clock: set by list and stat, None in what put_* returns;
    # not part of equality (the same object, stated twice, is equal).
    modified: datetime | None = field(default=None, compare=False)
    # What tells this write of the key from any other (S3's ETag; a local file's inode and
    # mtime; the memory store's write count), set by list and stat where the store has one.
    etag: str | None = field(default=None, compare=False)


class StoreBase:
    """What every store shares: the URL it was opened from, and the errors that name it."""

    def __init__(self, url: str) -> None:
        self._url = url

    @property
    def url(self) -> str:
        """The URL this store was opened from, without credentials."""
        return self._url

    def require_create_only(self) -> None:
        """Nothing to check: a local or memory store refuses an overwrite by itself."""

    def _not_found(self, key: str) -> NotFound:
        return NotFound(f"object {key} not found in {self._url}")

    def _already_exists(self, key: str) -> AlreadyExists:
        return AlreadyExists(f"object {key} already exists in {self._url}; it was left unchanged")

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def delete_many(self, keys: Sequence[str]) -> None:
        """One by one, in order: a local or memory store has no request to save."""
        for key in keys:
            self.delete(key)


class ObjectStore(Protocol):
    """A flat namespace of immutable objects. See the module docstring for the contract."""

    @property
    def url(self) -> str:
        """The URL this store was opened from, without credentials."""
        ...

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        """Write ``key`` from ``chunks``; visible only once complete."""
        ...

    def put_bytes(self, key: str, data: bytes, *, create_only: bool = False) -> ObjectInfo:
        """Write a small object; with ``create_only`` fail if it exists."""
        ...

    def require_create_only(self) -> None:
        """Raise :class:`~lifeboat.errors.UsageError` when a create-only write here could replace an object."""
        ...

    def get_stream(self, key: str, chunk_size: int = 4 << 20) -> Iterator[bytes]:
        """Yield the bytes of ``key`` in chunks."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """Return the bytes of a small object."""
        ...

    def get_range(self, key: str, start: int, end: int) -> bytes | memoryview:
        """Return bytes ``start`` to ``end`` (exclusive) of ``key``, fewer past its end."""
        ...

    def stat(self, key: str) -> ObjectInfo | None:
        """Return the object's info, or None when it does not exist."""
        ...

    def list(self, prefix: str = "", *, after: str = "") -> Iterator[ObjectInfo]:
        """Yield objects under ``prefix`` (whose first segment sorts after ``after``), sorted by key."""
        ...

    def folders(self, prefix: str = "") -> tuple[str, ...]:
        """The names of the folders directly under ``prefix`` ("" or ending in ``/``), sorted."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""
        ...

    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove every one of ``keys`` (missing ones are not an error), in batches in the order given."""
        ...

    def incomplete_uploads(self, prefix: str = "") -> builtins.list[IncompleteUpload]:
        """Uploads under the folder ``prefix`` that were neither completed nor aborted, oldest first.

        A live upload is listed too, with a recent ``modified``: only old ones may be removed.
        Raises :class:`~lifeboat.errors.Unsupported` when the backend cannot list them.
        """
        ...

    def remove_incomplete(self, upload: IncompleteUpload) -> None:
        """Remove (abort) ``upload``; one already gone is not an error."""
        ...

"""The object-store seam: what every backend (memory, file, s3) promises.

Keys are ``/``-separated relative names (``clusters/prod/backups/<id>/snapshot.db.zst``),
never starting with ``/`` and never containing ``..``; backends reject others with
:class:`~lifeboat.errors.UsageError`.

Contract, checked by ``tests/contract/`` against every backend:

* ``put_stream`` writes an object from an iterable of chunks without holding it whole in
  memory. The object becomes visible only when the whole stream was written: an exception
  from the iterable or from the backend leaves no object under that key (a partial upload
  is aborted / its temp file removed).
* ``put_bytes(..., create_only=True)`` is atomic: when the key already exists it raises
  :class:`~lifeboat.errors.AlreadyExists` and leaves the existing object untouched. The
  catalog uses it to write ``manifest.json`` exactly once.
* ``get_stream`` yields the object's bytes in chunks; ``get_bytes`` returns them whole (for
  small objects only). A missing key raises :class:`~lifeboat.errors.NotFound`.
* ``list`` yields every object whose key starts with ``prefix`` (a plain string prefix),
  sorted by key.
* ``delete`` of a missing key is not an error (deletes are retried after interruptions).
* Unreachable store, bad credentials or a missing bucket raise
  :class:`~lifeboat.errors.RepositoryUnavailable`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one stored object."""

    key: str
    size: int


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

    def get_stream(self, key: str, chunk_size: int = 4 << 20) -> Iterator[bytes]:
        """Yield the bytes of ``key`` in chunks."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """Return the bytes of a small object."""
        ...

    def stat(self, key: str) -> ObjectInfo | None:
        """Return the object's info, or None when it does not exist."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield objects under ``prefix``, sorted by key."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""
        ...

"""A real object store that counts what is read and listed through it, for tests of read costs."""

from __future__ import annotations

from collections.abc import Iterator

from lifeboat.catalog.layout import LAYOUTS
from lifeboat.store.base import ObjectInfo, ObjectStore


class CountingStore:
    """A real store, counting the manifests read and the keys listed through it."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self.manifests_read = 0
        self.listed = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def _count(self, key: str) -> None:
        self.manifests_read += any((name := layout.parse(key)) is not None and name.is_manifest
                                   for layout in LAYOUTS.values())

    def get_bytes(self, key: str) -> bytes:
        self._count(key)
        return self._store.get_bytes(key)

    def get_range(self, key: str, start: int, end: int) -> bytes | memoryview:
        self._count(key)  # records are read as one range up to their size cap
        return self._store.get_range(key, start, end)

    def list(self, prefix: str = "", *, after: str = "") -> Iterator[ObjectInfo]:
        found = list(self._store.list(prefix, after=after))
        self.listed += len(found)
        return iter(found)

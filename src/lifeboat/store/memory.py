"""An in-memory object store for unit tests, with injectable faults.

It honours the whole contract of :mod:`lifeboat.store.base` (create-only, a failed
stream leaves nothing) so code tested against it behaves the same on real backends. It is
not a backend for users: ``memory://`` exists for tests only.
"""

from __future__ import annotations

import builtins

import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from lifeboat.clock import Clock, SystemClock
from lifeboat.errors import LifeboatError, RepositoryUnavailable
from lifeboat.store.base import (
    IncompleteUpload, ObjectInfo, StoreBase, after_in_folder, check_folder, check_key, check_listing, check_prefix,
    folder_of,
)

OPERATIONS = ("put_stream", "put_bytes", "get_stream", "get_bytes", "get_range", "stat", "list", "folders",
              "delete")


@dataclass
class Fault:
    """One injected failure; it fires once, then is discarded.

    It hits the call of ``operation`` after ``after_calls`` matching calls succeeded, on
    keys starting with ``key_prefix``. With ``after_bytes``, a ``put_stream`` or ``get_stream``
    fails only once that many bytes have passed, i.e. midway through the stream.
    """

    operation: str
    after_calls: int = 0
    after_bytes: int | None = None
    key_prefix: str = ""
    error: LifeboatError = field(
        default_factory=lambda: RepositoryUnavailable("memory store: injected fault")
    )

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(f"unknown operation {self.operation!r}; one of {OPERATIONS}")
        if self.after_bytes is not None and self.operation not in ("put_stream", "get_stream"):
            raise ValueError("after_bytes applies to put_stream and get_stream only")


class MemoryStore(StoreBase):
    """Objects in a dict. ``calls`` counts every operation and ``listed`` the objects every
    listing returned, for assertions in tests.

    ``clock`` stamps each object's ``modified`` time as it is written (a FakeClock makes
    objects as old as a test needs).
    """

    def __init__(self, url: str = "memory://", clock: Clock | None = None) -> None:
        super().__init__(url)
        self.clock: Clock = clock or SystemClock()
        self._objects: dict[str, bytes] = {}
        self._modified: dict[str, datetime] = {}
        self._version: dict[str, str] = {}  # the write count when each key was last written
        self._writes = 0
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.listed = 0  # objects returned by every listing so far

    def __getstate__(self) -> dict[str, object]:
        """A copy for another process (a PITR survey's child): everything but the lock."""
        with self._lock:
            return {name: value for name, value in vars(self).items() if name != "_lock"}

    def __setstate__(self, state: dict[str, object]) -> None:
        vars(self).update(state)
        self._lock = threading.Lock()

    def inject(self, fault: Fault) -> None:
        """Arm ``fault``; several faults may be armed at once."""
        self._faults.append(fault)

    def keys(self) -> list[str]:
        """Every stored key, sorted (for test assertions)."""
        return sorted(self._objects)

    def _fault_for(self, operation: str, key: str) -> Fault | None:
        with self._lock:  # callers may read from several threads; no count may be lost
            self.calls[operation] += 1
        for fault in self._faults:
            if fault.operation != operation or not key.startswith(fault.key_prefix):
                continue
            if fault.after_calls > 0:
                fault.after_calls -= 1
                continue
            self._faults.remove(fault)
            if fault.after_bytes is None:
                raise fault.error
            return fault
        return None

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        check_key(key)
        fault = self._fault_for("put_stream", key)
        parts: list[bytes] = []
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if fault is not None and fault.after_bytes is not None and size > fault.after_bytes:
                raise fault.error
            parts.append(bytes(chunk))
        with self._lock:
            self._objects[key] = b"".join(parts)
            self._written(key)
        return ObjectInfo(key, size)

    def put_bytes(self, key: str, data: bytes, *, create_only: bool = False) -> ObjectInfo:
        check_key(key)
        self._fault_for("put_bytes", key)
        with self._lock:
            if create_only and key in self._objects:
                raise self._already_exists(key)
            self._objects[key] = bytes(data)
            self._written(key)
        return ObjectInfo(key, len(data))

    def _written(self, key: str) -> None:
        self._modified[key] = self.clock.now()
        self._writes += 1
        self._version[key] = str(self._writes)

    def get_stream(self, key: str, chunk_size: int = 4 << 20) -> Iterator[bytes]:
        check_key(key)
        fault = self._fault_for("get_stream", key)
        data = self._get(key)
        return self._chunks(data, chunk_size, fault)

    @staticmethod
    def _chunks(data: bytes, chunk_size: int, fault: Fault | None) -> Iterator[bytes]:
        for start in range(0, len(data), chunk_size):
            end = min(start + chunk_size, len(data))
            if fault is not None and fault.after_bytes is not None and end > fault.after_bytes:
                raise fault.error
            yield data[start:end]

    def get_bytes(self, key: str) -> bytes:
        check_key(key)
        self._fault_for("get_bytes", key)
        return self._get(key)

    def get_range(self, key: str, start: int, end: int) -> bytes:
        check_key(key)
        self._fault_for("get_range", key)
        return self._get(key)[start:end]

    def _get(self, key: str) -> bytes:
        try:
            return self._objects[key]
        except KeyError:
            raise self._not_found(key) from None

    def stat(self, key: str) -> ObjectInfo | None:
        check_key(key)
        self._fault_for("stat", key)
        with self._lock:
            data = self._objects.get(key)
            return None if data is None else ObjectInfo(key, len(data), self._modified[key], self._version[key])

    def list(self, prefix: str = "", *, after: str = "") -> Iterator[ObjectInfo]:
        check_listing(prefix, after)
        self._fault_for("list", prefix)
        with self._lock:
            found = [ObjectInfo(k, len(v), self._modified[k], self._version[k]) for k, v in sorted(self._objects.items())
                     if k.startswith(prefix) and after_in_folder(k, prefix, after)]
        self.listed += len(found)
        return iter(found)

    def folders(self, prefix: str = "") -> tuple[str, ...]:
        check_folder(prefix)
        self._fault_for("folders", prefix)
        with self._lock:
            names = {folder_of(k, prefix) for k in self._objects if k.startswith(prefix)}
        return tuple(sorted(name for name in names if name is not None))

    def delete(self, key: str) -> None:
        check_key(key)
        self._fault_for("delete", key)
        with self._lock:
            self._objects.pop(key, None)
            self._modified.pop(key, None)
            self._version.pop(key, None)

    def incomplete_uploads(self, prefix: str = "") -> builtins.list[IncompleteUpload]:
        check_folder(prefix)
        return []  # a write here is one dict assignment: it completes or never starts

    def remove_incomplete(self, upload: IncompleteUpload) -> None:
        return None

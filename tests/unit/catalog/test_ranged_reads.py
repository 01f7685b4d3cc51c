"""A large stored object read as ranges, several at once, handed on in order."""

from __future__ import annotations

import threading
import time

import pytest

from lifeboat.catalog.ids import new_backup_id
from lifeboat.catalog.repository import RANGE_SIZE, RANGES_IN_FLIGHT, BackupRepository
from lifeboat.catalog.streams import ranged
from lifeboat.errors import RepositoryUnavailable
from lifeboat.store.memory import Fault, MemoryStore
from tests.unit.catalog.test_repository import T0, manifest, stored


class SlowSource:
    """Ranges of ``data`` that take a moment each, recording how many are read at once."""

    def __init__(self, data: bytes, fail_at: int | None = None) -> None:
        self.data = data
        self.fail_at = fail_at
        self.reading = 0
        self.most = 0
        self.started: list[int] = []
        self._lock = threading.Lock()

    def read(self, start: int, end: int) -> bytes:
        with self._lock:
            self.reading += 1
            self.most = max(self.most, self.reading)
            self.started.append(start)
        time.sleep(0.01 if start % 3 else 0.03)  # some ranges come back later than the next ones
        with self._lock:
            self.reading -= 1
        if start == self.fail_at:
            raise RepositoryUnavailable("store went away mid-object")
        return self.data[start:end]


def test_ranges_arrive_in_order_with_a_bounded_number_in_flight() -> None:
    data = bytes(range(256)) * 1000
    source = SlowSource(data)

    chunks = list(ranged(source.read, len(data), 10_000, 3))

    assert b"".join(chunks) == data and len(chunks) == 26
    assert source.most == 3


def test_a_failed_range_is_raised_in_its_place() -> None:
    data = b"x" * 100_000
    got = []
    with pytest.raises(RepositoryUnavailable, match="mid-object"):
        for chunk in ranged(SlowSource(data, fail_at=50_000).read, len(data), 10_000, 4):
            got.append(chunk)
    assert len(got) == 5


def test_a_consumer_stopping_early_stops_requesting_ranges() -> None:
    data = b"y" * 1_000_000
    source = SlowSource(data)
    reader = ranged(source.read, len(data), 10_000, 2)
    next(reader)
    reader.close()
    time.sleep(0.1)
    assert len(source.started) <= 4  # of 100


def test_a_large_backup_object_is_read_as_ranges_and_a_small_one_as_one_stream() -> None:
    store = MemoryStore()
    repo = BackupRepository.open(store, create=True)
    m = stored(repo, manifest(new_backup_id(T0)))
    big = bytes(range(256)) * ((5 * RANGE_SIZE) // 256 + 7)
    store.put_bytes(repo.object_key(m, "snapshot.db.zst"), big)
    store.calls.clear()  # opening the repository read its marker
    assert b"".join(repo.read_object(m, "snapshot.db.zst")) == big
    assert store.calls["get_range"] == 6 and store.calls["get_stream"] == 0
    store.put_bytes(repo.object_key(m, "snapshot.db.zst"), b"small")
    assert b"".join(repo.read_object(m, "snapshot.db.zst")) == b"small"
    assert store.calls["get_stream"] == 1
    assert RANGES_IN_FLIGHT > 1


def test_a_store_failing_midway_through_a_large_object_fails_the_read() -> None:
    store = MemoryStore()
    repo = BackupRepository.open(store, create=True)
    m = stored(repo, manifest(new_backup_id(T0)))
    store.put_bytes(repo.object_key(m, "snapshot.db.zst"), b"z" * (3 * RANGE_SIZE))
    store.inject(Fault("get_range", after_calls=1))
    with pytest.raises(RepositoryUnavailable, match="injected"):
        b"".join(repo.read_object(m, "snapshot.db.zst"))

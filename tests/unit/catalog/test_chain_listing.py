"""Capture chains read back: one damaged record or a chain deleted while listed stops nothing; a damaged segment is named."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from lifeboat.catalog.chains import ChainInfo, ChainStore, DamagedSegment, Gap, Heartbeat, segment_named
from lifeboat.catalog.layout import CHAIN_NAME, GAP_NAME, HEARTBEAT_NAME, chain_object_key
from lifeboat.catalog.records import SMALL_RECORD_MAX
from lifeboat.catalog.segments import Predecessor
from lifeboat.errors import IntegrityError
from lifeboat.store.base import ObjectInfo
from lifeboat.store.memory import MemoryStore
from tests.unit.catalog.capture_records import put, segment

CLUSTER = "prod"
WHEN = datetime(2026, 12, 1, tzinfo=timezone.utc)
GOOD, DAMAGED = "20261201T030000Z-aaaaaa", "20261201T040000Z-bbbbbb"


def started(store: ChainStore, chain: str, base_revision: int) -> None:
    store.start(ChainInfo(chain, CLUSTER, chain, base_revision, "abc", "2026-12-01T03:00:00Z"))


HUGE = (b'{"format": 1, "chain": "c", "cluster": "prod", "base_backup": "c", "base_revision": 1e400, '
        b'"cluster_id": "a", "started_at": "s", "reason": "r", "last_revision": 1e400, '
        b'"detected_at": "2026-12-01T00:00:00Z"}')


@pytest.mark.parametrize("record", [CHAIN_NAME, GAP_NAME])
@pytest.mark.parametrize("damage", [b"{", b'{"format": 1}', b"[1, 2]", HUGE])
def test_a_damaged_record_leaves_out_its_chain_only_and_says_so(
    caplog: pytest.LogCaptureFixture, record: str, damage: bytes
) -> None:
    store = ChainStore(MemoryStore())
    started(store, GOOD, 10)
    started(store, DAMAGED, 20)
    store.store.put_bytes(chain_object_key(CLUSTER, DAMAGED, record), damage)
    with caplog.at_level(logging.WARNING):
        chains = store.chains(CLUSTER)
    assert [c.info.chain for c in chains] == [GOOD]
    assert f"chain {DAMAGED} is left out" in caplog.text and record in caplog.text


def test_a_damaged_heartbeat_is_ignored_and_its_chain_kept(caplog: pytest.LogCaptureFixture) -> None:
    store = ChainStore(MemoryStore())
    started(store, GOOD, 10)
    store.store.put_bytes(chain_object_key(CLUSTER, GOOD, HEARTBEAT_NAME), b"not json")
    with caplog.at_level(logging.WARNING):
        (chain,) = store.chains(CLUSTER)
    assert chain.heartbeat is None and "heartbeat" in caplog.text


@pytest.mark.parametrize("record", [CHAIN_NAME, GAP_NAME, HEARTBEAT_NAME])
def test_a_chain_record_larger_than_any_real_one_is_damaged_and_not_read_whole(
        caplog: pytest.LogCaptureFixture, record: str) -> None:
    """chain.json, gap.json and heartbeat.json were read whole, whatever their size."""
    memory = MemoryStore()
    store = ChainStore(memory)
    started(store, GOOD, 10)
    key = chain_object_key(CLUSTER, GOOD, record)
    if record == CHAIN_NAME:
        valid = memory.get_bytes(key)
    elif record == GAP_NAME:
        valid = Gap("stopped", 10, WHEN).to_json()
    else:
        valid = Heartbeat(10, WHEN).to_json()
    memory.put_bytes(key, valid + b" " * SMALL_RECORD_MAX)
    read: list[int] = []
    get_range = memory.get_range
    memory.get_range = lambda k, start, end: (read.append(end - start), get_range(k, start, end))[1]  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING):
        chains = store.chains(CLUSTER)
    assert f"larger than {SMALL_RECORD_MAX:,} bytes" in caplog.text
    assert [c.info.chain for c in chains] == ([GOOD] if record == HEARTBEAT_NAME else [])
    assert read and max(read) <= SMALL_RECORD_MAX + 1


class DeletedWhileListed(MemoryStore):
    """A listing that still shows the keys a concurrent ``delete_chain`` removes right after."""

    def list(self, prefix: str, *, after: str = "") -> Iterator[ObjectInfo]:
        listed = list(super().list(prefix, after=after))
        for info in listed:
            if info.key.startswith(chain_object_key(CLUSTER, DAMAGED, "")):
                self.delete(info.key)
        return iter(listed)


@pytest.mark.parametrize("records", [(CHAIN_NAME,), (CHAIN_NAME, GAP_NAME, HEARTBEAT_NAME)])
def test_a_chain_deleted_while_listed_is_gone_not_an_error(records: tuple[str, ...]) -> None:
    store = ChainStore(DeletedWhileListed())
    started(store, GOOD, 10)
    started(store, DAMAGED, 20)
    if GAP_NAME in records:
        moment = datetime(2026, 12, 1, 4, 30, tzinfo=timezone.utc)
        store.record_gap(CLUSTER, DAMAGED, Gap("compacted", 25, moment))
        store.beat(CLUSTER, DAMAGED, Heartbeat(25, moment))
    assert [c.info.chain for c in store.chains(CLUSTER)] == [GOOD]


@pytest.mark.parametrize("damage", ["flip", "cut"])
def test_a_damaged_segment_is_named_in_the_error(damage: str) -> None:
    # zstd's own message ("Restored data doesn't match checksum") names no object.
    store = ChainStore(MemoryStore())
    original = segment(Predecessor("base", 10, GOOD), (11, 0.1, [put(b"/a", b"x" * 4000, 11, 11, 1)]))
    ref = store.commit_segment(original, (), 1)
    key = chain_object_key(original.cluster, original.chain, "segments/" + ref.name)
    stored = bytearray(store.store.get_bytes(key))
    if damage == "flip":
        stored[len(stored) // 2] ^= 0xFF
    else:
        del stored[-6:]
    store.store.delete(key)
    store.store.put_bytes(key, bytes(stored))
    with pytest.raises(IntegrityError, match=f"capture segment .*{ref.name}: compressed object"):
        store.read_segment(original.cluster, original.chain, ref, None)


def test_segments_whose_chain_record_is_missing_are_left_out_and_said(caplog: pytest.LogCaptureFixture) -> None:
    """Capture writes chain.json first and a deletion removes it last: segments without it are
    damage, not a chain being made or deleted, and a timeline must not shrink in silence."""
    store = ChainStore(MemoryStore())
    started(store, GOOD, 10)
    store.commit_segment(segment(Predecessor("base", 10, GOOD), (11, 0.1, [put(b"/a", b"x", 11, 11, 1)])), (), 1)
    store.store.delete(chain_object_key(CLUSTER, GOOD, CHAIN_NAME))
    with caplog.at_level(logging.WARNING):
        assert store.chains(CLUSTER) == []
    assert f"chain {GOOD} of cluster {CLUSTER} has 1 segment(s) but no {CHAIN_NAME}" in caplog.text


def test_a_segment_that_is_not_what_its_name_says_is_named_once() -> None:
    store = ChainStore(MemoryStore())
    original = segment(Predecessor("base", 10, GOOD), (11, 0.1, [put(b"/a", b"x", 11, 11, 1)]))
    ref = store.commit_segment(original, (), 1)
    raw = store.fetch_segment(original.cluster, original.chain, ref, None)
    claimed = replace(ref, last_revision=12, name=ref.name.replace(f"{11:020d}.", f"{12:020d}."))
    where = store.segment_where(original.cluster, original.chain, claimed)
    with pytest.raises(IntegrityError) as caught, segment_named(where, claimed):
        store.check_header(raw, original.cluster, original.chain, claimed)
    assert str(caught.value).count(where) == 1 and "not what its name says" in str(caught.value)
    assert isinstance(caught.value, DamagedSegment) and caught.value.revisions == (11, 12)

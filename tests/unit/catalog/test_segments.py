"""The segment format: what is written reads back exactly; damage is refused, never half read."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from lifeboat.catalog.chains import ChainStore, parse_segment_name, segment_name
from lifeboat.catalog.segments import Predecessor, Segment, decode_segment, encode_segment, events_after
from lifeboat.errors import AlreadyExists, IntegrityError
from lifeboat.store.memory import MemoryStore
from tests.unit.catalog.capture_records import delete, put, segment

BASE = Predecessor("base", 10, "20261201T030000Z-aaaaaa")


def sample() -> Segment:
    return segment(
        BASE,
        (11, 0.1, [put(b"/a", b"\x00\xff", 11, 11, 1)]),
        (12, 0.4, [put(b"/t1", b"one", 12, 12, 1, lease=0x77), put(b"/a", b"two", 11, 12, 2), delete(b"/b", 12)]),
        (14, 0.9, [delete(b"/a", 14)]),
        leases={0x77: 30},
    )


def test_segment_reads_back_exactly_with_sub_revision_order() -> None:
    original = sample()
    decoded = decode_segment(encode_segment(original), "test")
    assert decoded == original
    rows = [(rev, sub, e.kv.key) for rev, sub, e in events_after(decoded, 10, 13)]
    assert rows == [(11, 0, b"/a"), (12, 0, b"/t1"), (12, 1, b"/a"), (12, 2, b"/b")]


def test_segment_is_json_lines_a_short_script_can_read() -> None:
    lines = encode_segment(sample()).decode().splitlines()
    header = json.loads(lines[0])
    assert header["first_revision"] == 11 and header["last_revision"] == 14
    assert header["previous"] == {"kind": "base", "name": "20261201T030000Z-aaaaaa", "last_revision": 10}
    assert header["leases"] == {str(0x77): 30}
    assert json.loads(lines[2])["events"][2] == {
        "type": "delete", "key": "L2I=", "value": "", "create_revision": 0, "mod_revision": 12,
        "version": 0, "lease": 0}
    assert "end" in json.loads(lines[-1])


@pytest.mark.parametrize("damage", [
    lambda raw: raw[: len(raw) // 2],                          # truncated
    lambda raw: raw.replace(b'"b25l"', b'"b25m"'),             # a value changed
    lambda raw: raw.split(b"\n", 2)[0] + b"\n" + raw.split(b"\n", 2)[2],  # a revision line dropped
    lambda raw: b"",
])
def test_damaged_segment_is_refused(damage: Callable[[bytes], bytes]) -> None:
    raw = encode_segment(sample())
    with pytest.raises(IntegrityError, match="damaged"):
        decode_segment(damage(raw), "s3://b/x")


def test_segment_must_start_after_its_predecessor() -> None:
    with pytest.raises(ValueError):
        segment(Predecessor("base", 11, "x"), (11, 0, [put(b"/a", b"", 11, 11, 1)]))


def test_segment_name_carries_range_and_seen_times_for_listing_without_a_key() -> None:
    original = sample()
    name = segment_name(original, encrypted=True)
    ref = parse_segment_name(name)
    assert ref is not None and ref.encrypted
    assert (ref.first_revision, ref.last_revision) == (11, 14)
    assert ref.first_seen == original.first_seen and ref.last_seen == original.last_seen


def test_a_segment_is_committed_once_and_read_back_checked() -> None:
    store = ChainStore(MemoryStore())
    original = sample()
    ref = store.commit_segment(original, (), 1)
    with pytest.raises(AlreadyExists):
        store.commit_segment(original, (), 1)
    assert store.read_segment("prod", "20261201T030000Z-aaaaaa", ref, None) == original

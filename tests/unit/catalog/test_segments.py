"""The segment format: what is written reads back exactly; damage is refused, never half read."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import zstandard

from lifeboat.catalog.chains import ChainStore, parse_segment_name, segment_name
from lifeboat.catalog.segment_index import CREATED, DELETED
from lifeboat.catalog.segment_records import DELETE, HEAD_SIZE, iter_records
from lifeboat.catalog.segments import (
    CapturedRevision, Predecessor, Segment, check_indexed_records, decode_segment, encode_segment, encode_segment_frames, events_after,
    read_header,
)
from lifeboat.errors import AlreadyExists, IntegrityError
from lifeboat.etcdapi.model import EventType, KeyValue, WatchEvent
from lifeboat.etcdapi.proto import kv_pb2
from lifeboat.snapshot.replay import event_row
from lifeboat.store.memory import MemoryStore
from tests.support.segment_v1 import encode_segment_v1
from tests.support.segment_v2 import encode_segment_v2
from tests.unit.catalog.capture_records import at, delete, put, segment

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


def test_version_3_index_lists_every_record_without_its_value() -> None:
    original = sample()
    first, rest = encode_segment_frames(original)
    header = read_header(first, "test", index_frame=True)
    assert header.records_apart and header.body == b"" and header.index is not None
    index = header.index
    assert list(index.revisions) == [11, 12, 12, 12, 14]
    assert index.key_list(0, len(index)) == [b"/a", b"/t1", b"/a", b"/b", b"/a"]
    assert list(index.leases) == [0, 0x77, 0, 0, 0]
    assert list(index.flags) == [CREATED, CREATED, 0, DELETED, DELETED]
    body = read_header(first + rest, "test").body
    assert [body[offset:offset + 8] for offset in index.offsets] == \
        [rev.to_bytes(8, "big") for rev in (11, 12, 12, 12, 14)]
    assert len(body) == header.records_bytes
    with pytest.raises(IntegrityError, match="no end line"):
        read_header(first, "test"), "the first frame alone is not a whole segment"


def test_an_index_that_does_not_match_its_records_is_refused() -> None:
    first, rest = encode_segment_frames(sample())
    header = json.loads(first[:first.index(b"\n")])
    moved = first.replace(b"/t1", b"/t2")  # a key in the index, not in the records
    assert moved != first
    with pytest.raises(IntegrityError, match="record 1 is not what its index says"):
        decode_segment(_rehashed(moved + rest, lambda b: b), "test")
    assert header["index"]["records_bytes"] == len(read_header(first + rest, "test").body)


@pytest.mark.parametrize("encoder", [encode_segment, encode_segment_v2], ids=["version-3", "version-2"])
def test_records_are_the_mvcc_rows_etcd_wrote(encoder: Callable[[Segment], bytes]) -> None:
    original = sample()
    header = read_header(encoder(original), "test")
    assert header.seen_of(12) == at(0.4) and header.seen_of(13) == at(0.4)
    body = bytes(header.body)
    found = [(body[value_at - HEAD_SIZE : value_at - HEAD_SIZE + (18 if kind == DELETE else 17)],
              body[value_at:value_end]) for _, _, kind, _, value_at, value_end in iter_records(body)]
    assert found == [event_row(rev.revision, sub, e) for rev in original.revisions
                     for sub, e in enumerate(rev.events)]


def test_kept_watch_bytes_are_written_as_they_are() -> None:
    kv = put(b"/a", b"v", 11, 11, 1).kv
    stored = kv_pb2.KeyValue(key=kv.key, value=kv.value, create_revision=11, mod_revision=11,
                             version=1).SerializeToString()
    event = WatchEvent(EventType.PUT, kv, kv_bytes=stored)
    raw = encode_segment(segment(BASE, (11, 0.1, [event])))
    assert stored in raw and decode_segment(raw, "test").revisions[0].events[0].kv_bytes == stored


def test_a_version_1_segment_written_by_older_lifeboat_reads_back_exactly() -> None:
    raw = (Path(__file__).parent / "data" / "segment-v1.jsonl").read_bytes()
    assert json.loads(raw.splitlines()[0])["version"] == 1
    assert decode_segment(raw, "old") == sample()


def by_hand(tmp_path: Path, segments: dict[str, bytes]) -> list[str]:
    """What the documented script prints for ``segments`` (stored bytes by file name)."""
    doc = (Path(__file__).parents[3] / "docs" / "repository-format.md").read_text()
    script = doc.split("Reading a chain by hand")[1].split("```python\n")[1].split("```")[0]
    (tmp_path / "read.py").write_text(script)
    paths = []
    for name, stored in segments.items():
        (tmp_path / name).write_bytes(stored)
        paths.append(str(tmp_path / name))
    return subprocess.run([sys.executable, str(tmp_path / "read.py"), *paths], check=True,
                          capture_output=True, text=True).stdout.splitlines()


def test_the_documented_script_reads_a_chain_by_hand(tmp_path: Path) -> None:
    name = segment_name(sample(), False)
    versions = {name.replace(".seg.", ".jsonl."): zstandard.ZstdCompressor().compress(encode_segment_v1(sample())),
                name: zstandard.ZstdCompressor().compress(encode_segment_v2(sample()))}
    expected = ["11 0 2026-12-01T03:00:00.100Z put b'/a' b'\\x00\\xff' 11 1 0",
                "12 0 2026-12-01T03:00:00.400Z put b'/t1' b'one' 12 1 119",
                "12 1 2026-12-01T03:00:00.400Z put b'/a' b'two' 11 2 0",
                "12 2 2026-12-01T03:00:00.400Z delete b'/b' b'' 0 0 0",
                "14 0 2026-12-01T03:00:00.900Z delete b'/a' b'' 0 0 0"]
    for n, (file_name, stored) in enumerate(versions.items()):
        (tmp_path / str(n)).mkdir()
        assert by_hand(tmp_path / str(n), {file_name: stored}) == expected, "every version reads alike"
    (tmp_path / "3").mkdir()
    assert by_hand(tmp_path / "3", {name: ChainStore.encoded(sample(), [], 3)}) == expected  # as capture stores it


def test_the_documented_script_reads_each_revision_once_beside_a_pack(tmp_path: Path) -> None:
    from lifeboat.capture.packing import merged
    first = segment(BASE, (11, 0.1, [put(b"/a", b"1", 11, 11, 1)]), (12, 0.2, [put(b"/b", b"2", 12, 12, 1)]))
    second = segment(Predecessor("segment", 12, segment_name(first, False)), (13, 0.3, [delete(b"/a", 13)]))
    third = segment(Predecessor("segment", 13, segment_name(second, False)), (14, 0.4, [put(b"/c", b"3", 14, 14, 1)]))
    pack = merged([first, second])
    smalls = {segment_name(s, False): ChainStore.encoded(s, [], 3) for s in (first, second, third)}
    (tmp_path / "smalls").mkdir()
    (tmp_path / "beside").mkdir()
    alone = by_hand(tmp_path / "smalls", smalls)
    assert len(alone) == 4
    assert by_hand(tmp_path / "beside", {**smalls, segment_name(pack, False): ChainStore.encoded(pack, [], 3)}) == alone


def _rehashed(raw: bytes, edit: Callable[[bytes], bytes]) -> bytes:
    """``raw`` edited before its end line, with a matching sha256: damage the hash cannot see."""
    body = edit(raw[: raw.rstrip(b"\n").rfind(b"\n") + 1])
    return body + json.dumps({"end": {"sha256": hashlib.sha256(body).hexdigest()}}).encode() + b"\n"


@pytest.mark.parametrize("encoder", [encode_segment, encode_segment_v2, encode_segment_v1],
                         ids=["version-3", "version-2", "version-1"])
@pytest.mark.parametrize("damage", [
    lambda raw: raw[: len(raw) // 2],
    lambda raw: raw.replace(b"one", b"onf").replace(b'"b25l"', b'"b25m"'),
    lambda raw: raw[:-120] + raw[-100:],
    lambda raw: b"",
    lambda raw: _rehashed(raw, lambda b: b.replace(b'"events":5', b'"events":4')),
], ids=["truncated", "value-changed", "bytes-dropped", "empty", "counts-disagree"])
def test_damaged_segment_is_refused(damage: Callable[[bytes], bytes], encoder: Callable[[Segment], bytes]) -> None:
    raw = encoder(sample())
    with pytest.raises(IntegrityError, match="damaged"):
        decode_segment(damage(raw), "s3://b/x")


@pytest.mark.parametrize("edit", [
    lambda b: b.replace(b"\x00\x00\x00\x00\x00\x00\x00\x0e_", b"\x00\x00\x00\x00\x00\x00\x00\x0b_"),
    lambda b: b.replace(b"\x00\x00\x00\x00\x00\x00\x00\x02t", b"\x00\x00\x00\x00\x00\x00\x00\x02x"),
    lambda b: b[:-3] + b"\n",
], ids=["revisions-out-of-order", "unknown-kind", "cut-record"])
def test_version_2_records_that_do_not_hold_together_are_refused(edit: Callable[[bytes], bytes]) -> None:
    raw = _rehashed(encode_segment(sample()), edit)
    with pytest.raises(IntegrityError, match="damaged"):
        decode_segment(raw, "s3://b/x")


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


def test_a_header_read_from_a_reused_buffer_ignores_what_an_earlier_segment_left_there() -> None:
    short = encode_segment(sample())
    longer = encode_segment(Segment("prod", "c", Predecessor("base", 10, "b"), tuple(
        CapturedRevision(rev, at(0.1), (WatchEvent(EventType.PUT, KeyValue(b"/long", b"v" * 5000, 11, rev, rev - 10)),))
        for rev in range(11, 31)), {}))
    buffer = bytearray(longer)  # the longer segment's bytes stay after the shorter one's
    buffer[: len(short)] = short
    from_buffer = read_header(buffer, "test", size=len(short))
    from_bytes = read_header(short, "test")
    assert bytes(from_buffer.body) == from_bytes.body
    assert replace(from_buffer, body=b"") == replace(from_bytes, body=b"")
    with pytest.raises(IntegrityError, match="damaged"):
        read_header(buffer, "test", size=len(short) - 40)  # cut inside its end line


def _index_edited(column_at: Callable[[int], int], value: bytes) -> bytes:
    """sample()'s raw bytes with ``value`` written into its index at ``column_at(records)``
    bytes after the header line, sha256 matching: damage only the index check can see."""
    raw = encode_segment(sample())
    start = raw.index(b"\n") + 1 + column_at(sample().event_count)
    return _rehashed(raw, lambda b: b[:start] + value + b[start + len(value):])


@pytest.mark.parametrize("raw", [
    _index_edited(lambda n: 12 * n, (1).to_bytes(8, "big")),  # the first record's lease
    _index_edited(lambda n: 8 * n + 4, (1).to_bytes(4, "big")),  # the second record's offset
    _index_edited(lambda n: 25 * n, b"/b"),  # the first key, /a
    _index_edited(lambda n: 24 * n, bytes([0])),  # the first record's flags: it created /a
    _rehashed(encode_segment(sample()), lambda b: b.replace(b'"revisions":3', b'"revisions":4')),
], ids=["lease", "offset", "key", "created", "counts"])
def test_an_index_that_does_not_describe_its_records_is_refused_without_decoding(raw: bytes) -> None:
    header = read_header(raw, "s3://b/x")  # the sha256 matches: only the index check finds it
    with pytest.raises(IntegrityError, match="s3://b/x is damaged"):
        check_indexed_records(header, "s3://b/x")


def test_a_whole_segment_passes_the_index_check_and_a_first_frame_alone_does_not() -> None:
    raw = encode_segment(sample())
    check_indexed_records(read_header(raw, "x"), "x")
    first, _ = encode_segment_frames(sample())
    with pytest.raises(IntegrityError, match="not a whole version 3 segment"):
        check_indexed_records(read_header(first, "x", index_frame=True), "x")


def test_joined_segments_are_the_segment_of_all_their_events_also_when_the_clock_went_back() -> None:
    from lifeboat.capture.packing import merged
    from lifeboat.catalog.segments import joined_frames
    first = segment(BASE, (11, 0.5, [put(b"/a", b"1", 11, 11, 1)]), (12, 0.9, [put(b"/b", b"2", 12, 12, 1)]))
    # The wall clock stepped back between two watch responses: 13 seen at 0.9, 14 at 0.5 again.
    second = segment(Predecessor("segment", 12, "x"), (13, 0.9, [delete(b"/a", 13)]),
                     (14, 0.5, [put(b"/c", b"3", 14, 14, 1)]), (15, 0.9, [delete(b"/c", 15)]))
    headers = [read_header(encode_segment(s), "x") for s in (first, second)]
    assert joined_frames(headers) == encode_segment_frames(merged([first, second]))
    assert decode_segment(b"".join(joined_frames(headers)), "x").revisions == first.revisions + second.revisions

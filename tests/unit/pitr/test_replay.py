"""Replaying segments: the rows up to a point, the leases held there, and refusing broken chains."""

from __future__ import annotations

import pickle
import random
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import zlib

import pytest
import zstandard

from lifeboat.catalog.chains import ChainStore
from lifeboat.catalog.codec import FrameBuffer, checksummed_frame_end, frames_decompressed
from lifeboat.catalog import segments as segments_module
from lifeboat.catalog.segment_index import IndexEntry, SegmentIndex, encode_index
from lifeboat.catalog.segments import Predecessor, Segment, SegmentHeader, encode_segment, read_header
from lifeboat.errors import IntegrityError, UsageError
from lifeboat.etcdapi.model import EventType, KeyValue, WatchEvent
from lifeboat.pitr import PointTarget, parse_time, replay
from lifeboat.pitr.replay import (
    UNKNOWN_LEASE_TTL, ReplayFacts, RowRun, StagedSegment, READ_AHEAD, compaction_marks, compile_rows, LeafPages,
    lease_rows,
    stored_rows,
)
from lifeboat.pitr.survey_run import HeaderReader, checked_segment
from lifeboat.catalog.segment_records import HEAD_SIZE
from lifeboat.snapshot.mvcc import decode_revision, encode_revision
from lifeboat.snapshot.writer import BucketChanges, write_db
from tests.unit.snapshot.test_latest_rows import db_with
from lifeboat.snapshot.replay import encode_fields, event_row, lease_row
from tests.support.segment_v1 import encode_segment_v1
from tests.support.segment_v2 import encode_segment_v2
from tests.unit.catalog.capture_records import delete, put, segment

BASE_ID = "20261201T030000Z-aaaaaa"
Encoder = Callable[[Segment], bytes]


def as_stored(segment: Segment) -> bytes:
    """A segment as capture stores it (version 3: two zstd frames), read as the survey reads it."""
    return ChainStore.encoded(segment, [], 3)


@pytest.fixture(params=[as_stored, encode_segment, encode_segment_v2, encode_segment_v1],
                ids=["version-3-stored", "version-3", "version-2", "version-1"])
def encoder(request: pytest.FixtureRequest) -> Encoder:
    """Every replay behaviour holds for the segments written now, as stored and as raw bytes,
    and for older ones."""
    found: Encoder = request.param
    return found


def read_as_named(path: Path) -> HeaderReader:
    def read(raw: bytearray, size: int, *, check_sha256: bool, index_frame: bool) -> SegmentHeader:
        return read_header(raw, str(path), check_sha256=check_sha256, size=size, index_frame=index_frame)
    return read


def staged(segments: list[Segment], tmp: Path, encoder: Encoder) -> Iterator[StagedSegment]:
    for number, s in enumerate(segments):
        path = tmp / f"{number:03d}.segment"
        path.write_bytes(encoder(s))
        if encoder is as_stored:
            yield checked_segment(path.read_bytes(), FrameBuffer(), path, read_as_named(path), str(path))
        else:
            yield StagedSegment(read_header(path.read_bytes(), str(path)), path)


def compiled(segments: list[Segment], base: int, up_to: int, tmp: Path, encoder: Encoder,
             base_id: str = BASE_ID) -> tuple[ReplayFacts, list[RowRun]]:
    tmp.mkdir(exist_ok=True)
    return compile_rows(staged(segments, tmp, encoder), base_id, base, up_to, tmp)


def survey(segments: list[Segment], base: int, up_to: int, tmp: Path, encoder: Encoder,
           base_id: str = BASE_ID) -> ReplayFacts:
    return compiled(segments, base, up_to, tmp, encoder, base_id)[0]


def rows(segments: list[Segment], base: int, up_to: int, tmp: Path, encoder: Encoder) -> list[tuple[bytes, bytes]]:
    return list(stored_rows(compiled(segments, base, up_to, tmp, encoder)[1]))


def chain_of_two() -> list[Segment]:
    first = segment(Predecessor("base", 10, BASE_ID),
                    (11, 1, [put(b"/a", b"1", 11, 11, 1, lease=5)]),
                    (12, 2, [put(b"/b", b"1", 12, 12, 1, lease=6), put(b"/c", b"1", 12, 12, 1, lease=7)]),
                    leases={5: 30, 6: 60})
    second = segment(Predecessor("segment", 12, "x"),
                     (13, 3, [delete(b"/b", 13)]),
                     (14, 4, [put(b"/a", b"2", 11, 14, 2)]))
    return [first, second]


def test_rows_are_each_keys_newest_up_to_the_point_in_revision_order(tmp_path: Path, encoder: Encoder) -> None:
    found = [decode_revision(key) for key, _ in rows(chain_of_two(), 10, 13, tmp_path / "13", encoder)]
    assert found == [(11, 0, False), (12, 1, False), (13, 0, True)], "/b's put at 12 is overwritten by its delete"
    found = [decode_revision(key) for key, _ in rows(chain_of_two(), 10, 12, tmp_path / "12", encoder)]
    assert found == [(11, 0, False), (12, 0, False), (12, 1, False)]


def test_the_point_is_marked_compacted_and_finished() -> None:
    marks = compaction_marks(14)
    assert {name: decode_revision(mark) for name, mark in marks.items()} == {
        b"scheduledCompactRev": (14, 0, False), b"finishedCompactRev": (14, 0, False)}


def test_survey_finds_the_leases_keys_hold_at_the_point(tmp_path: Path, encoder: Encoder) -> None:
    assert survey(chain_of_two(), 10, 12, tmp_path / "12", encoder).leases_at_point() == {5, 6, 7}
    at_14 = survey(chain_of_two(), 10, 14, tmp_path / "14", encoder)
    assert at_14.leases_at_point() == {7}, "/b was deleted and /a put again without a lease"
    assert at_14.events == 5 and at_14.last_revision == 14


def test_leases_missing_from_the_base_are_written_with_the_recorded_ttl(tmp_path: Path, encoder: Encoder) -> None:
    facts = survey(chain_of_two(), 10, 12, tmp_path, encoder)
    written = lease_rows(facts, base_leases=frozenset({5}))
    assert written == dict([lease_row(6, 60), lease_row(7, UNKNOWN_LEASE_TTL)])


def test_a_missing_segment_is_refused_not_skipped(tmp_path: Path, encoder: Encoder) -> None:
    first, second = chain_of_two()
    later = segment(Predecessor("segment", 14, "y"), (15, 5, [put(b"/z", b"", 15, 15, 1)]))
    with pytest.raises(IntegrityError, match="missing"):
        survey([first, later], 10, 15, tmp_path / "a", encoder)
    with pytest.raises(IntegrityError, match="ends at revision 14"):
        survey([first, second], 10, 16, tmp_path / "b", encoder)


def test_a_segment_that_does_not_follow_the_base_is_refused(tmp_path: Path, encoder: Encoder) -> None:
    first, _ = chain_of_two()
    with pytest.raises(IntegrityError, match="does not follow base backup"):
        survey([first], 10, 12, tmp_path, encoder, base_id="20261201T030000Z-bbbbbb")


def test_overlapping_copies_apply_each_revision_once(tmp_path: Path, encoder: Encoder) -> None:
    first, second = chain_of_two()
    copy = segment(Predecessor("segment", 11, "z"), (12, 2, list(first.revisions[1].events)),
                   (13, 3, [delete(b"/b", 13)]))
    found = [decode_revision(key)[:2] for key, _ in rows([first, copy, second], 10, 14, tmp_path, encoder)]
    assert found == [(12, 1), (14, 0)], "/b, created at 12 and deleted at 13, has no row"
    assert survey([first, copy, second], 10, 14, tmp_path / "s", encoder).events == 5


def test_rows_are_the_ones_etcd_writes_for_each_keys_newest_event(tmp_path: Path, encoder: Encoder) -> None:
    newest = {e.kv.key: event_row(rev.revision, sub, e) for s in chain_of_two() for rev in s.revisions
              for sub, e in enumerate(rev.events)}
    del newest[b"/b"]  # created at 12 and deleted at 13: see the tests below
    assert rows(chain_of_two(), 10, 14, tmp_path, encoder) == sorted(newest.values())


def history_of_deletes() -> list[Segment]:
    """After a base at 10 holding /base-1, /base-2 and /base-3 (each at version 1): keys created
    and deleted, base keys deleted, deleted and re-created."""
    first = segment(Predecessor("base", 10, BASE_ID),
                    (11, 1, [put(b"/born", b"1", 11, 11, 1, lease=5), delete(b"/base-1", 11)]),
                    (12, 2, [put(b"/base-2", b"2", 1, 12, 2), put(b"/again", b"1", 12, 12, 1)]),
                    (13, 3, [delete(b"/born", 13), delete(b"/base-2", 13), delete(b"/again", 13)]),
                    (14, 4, [put(b"/again", b"2", 14, 14, 1), delete(b"/base-3", 14)]),
                    leases={5: 30})
    second = segment(Predecessor("segment", 14, "x"),
                     (15, 5, [put(b"/base-3", b"new", 15, 15, 1), put(b"/late", b"1", 15, 15, 1)]),
                     (16, 6, [delete(b"/again", 16), delete(b"/base-3", 16)]),
                     (17, 7, [delete(b"/late", 17)]))
    return [first, second]


def written(segments: list[Segment], up_to: int, tmp: Path, encoder: Encoder) -> dict[bytes, tuple[int, int, bool]]:
    """Each written row's etcd key and (main, sub, tombstone)."""
    return {value[2:2 + value[1]]: decode_revision(key) for key, value in rows(segments, 10, up_to, tmp, encoder)}


def test_a_key_created_after_the_base_and_deleted_before_the_point_writes_no_row(
        tmp_path: Path, encoder: Encoder) -> None:
    found = written(history_of_deletes(), 17, tmp_path, encoder)
    assert b"/born" not in found, "neither live at the base nor at the point: not even a tombstone"
    assert survey(history_of_deletes(), 10, 17, tmp_path / "s", encoder).rows == len(found) == 4
    assert survey(history_of_deletes(), 10, 13, tmp_path / "13", encoder).leases_at_point() == set()


def test_a_deleted_key_that_was_in_the_base_keeps_its_tombstone(tmp_path: Path, encoder: Encoder) -> None:
    found = written(history_of_deletes(), 13, tmp_path, encoder)
    assert found[b"/base-1"] == (11, 1, True), "deleted as its first event after the base"
    assert found[b"/base-2"] == (13, 1, True), "updated (version 2), then deleted"


def test_a_key_deleted_and_created_again_keeps_what_its_base_row_needs(tmp_path: Path, encoder: Encoder) -> None:
    at_15 = written(history_of_deletes(), 15, tmp_path / "15", encoder)
    assert at_15[b"/again"] == (14, 0, False) and at_15[b"/base-3"] == (15, 0, False), "live: the put"
    at_17 = written(history_of_deletes(), 17, tmp_path / "17", encoder)
    assert b"/again" not in at_17, "created after the base, twice, and gone at the point"
    assert at_17[b"/base-3"] == (16, 1, True), "its base row is hidden although it was created again since"


def test_a_delete_at_the_point_keeps_its_tombstone_so_the_newest_row_is_the_point(
        tmp_path: Path, encoder: Encoder) -> None:
    """etcd takes the newest row as the store's revision, and a restore bumps from it."""
    at_13 = written(history_of_deletes(), 13, tmp_path / "13", encoder)
    assert [at_13[key] for key in (b"/born", b"/base-2", b"/again")] == [(13, 0, True), (13, 1, True), (13, 2, True)]
    found = rows(history_of_deletes(), 10, 17, tmp_path / "17", encoder)
    assert decode_revision(found[-1][0]) == (17, 0, True) and found[-1][1][2:] == b"/late"
    assert max(decode_revision(row)[0] for row, _ in found[:-1]) == 16


def test_segments_staged_compressed_give_the_same_rows(tmp_path: Path) -> None:
    raw = rows(chain_of_two(), 10, 14, tmp_path / "raw", encode_segment)
    (tmp_path / "zst").mkdir()
    staged = []
    for number, s in enumerate(chain_of_two()):
        path = tmp_path / "zst" / f"{number}.segment.zst"
        path.write_bytes(zstandard.ZstdCompressor().compress(encode_segment(s)))
        staged.append(StagedSegment(read_header(frames_decompressed(path.read_bytes()), str(path)), path, compressed=True))
    _, runs = compile_rows(staged, BASE_ID, 10, 14, tmp_path / "zst")
    assert all(run.compressed for run in runs) and list(stored_rows(runs)) == raw


def long_then_short() -> list[Segment]:
    """Long values, then a segment of short ones: what a reused buffer would leak into a row."""
    first = segment(Predecessor("base", 10, BASE_ID),
                    (11, 1, [put(b"/long/a", b"A" * 6000, 11, 11, 1)]),
                    (12, 2, [put(b"/long/b", b"B" * 3000, 12, 12, 1), put(b"/long/c", b"C" * 800, 12, 12, 1)]))
    second = segment(Predecessor("segment", 12, "x"),
                     (13, 3, [put(b"/s", b"s", 13, 13, 1)]), (14, 4, [put(b"/t", b"", 14, 14, 1)]))
    return [first, second]


def in_one_buffer(segments: list[Segment], tmp: Path) -> Iterator[StagedSegment]:
    """Segments staged compressed and checked as the download does, each decompressed into the
    same buffer as the one before (the header's body a view of it)."""
    buffer = FrameBuffer()
    for number, s in enumerate(segments):
        path = tmp / f"{number}.segment.zst"
        path.write_bytes(zstandard.ZstdCompressor().compress(encode_segment(s)))
        size = buffer.decompress(path.read_bytes())
        yield StagedSegment(read_header(buffer.data, str(path), size=size), path, compressed=True, raw_size=size)


def test_rows_read_through_one_reused_buffer_are_copies_of_their_own_bytes(tmp_path: Path) -> None:
    expected = sorted(event_row(rev.revision, sub, e) for s in long_then_short() for rev in s.revisions
                      for sub, e in enumerate(rev.events))
    facts, runs = compile_rows(in_one_buffer(long_then_short(), tmp_path), BASE_ID, 10, 14, tmp_path)
    assert facts.events == 5 and facts.rows == 5
    held = list(stored_rows(runs))  # every row kept while the later segments are decompressed
    assert held == expected
    assert all(type(key) is bytes and type(value) is bytes for key, value in held)


def test_rows_of_segments_read_ahead_into_reused_buffers_are_each_their_own(tmp_path: Path) -> None:
    # Long values, short ones, long again...: each segment's buffer is refilled by a later one
    # (READ_AHEAD + 1 buffers for nine segments), while the rows taken from it are still held.
    segments, previous = [], Predecessor("base", 10, BASE_ID)
    for n in range(9):
        revision, size = 11 + n, (6000 if n % 2 == 0 else 3)
        segments.append(segment(previous, (revision, n, [put(b"/k%d" % n, bytes([65 + n]) * size, revision,
                                                                 revision, 1)])))
        previous = Predecessor("segment", revision, "x")
    expected = sorted(event_row(rev.revision, sub, e) for s in segments for rev in s.revisions
                      for sub, e in enumerate(rev.events))
    _, runs = compile_rows(in_one_buffer(segments, tmp_path), BASE_ID, 10, 19, tmp_path)
    assert len(runs) == 9 > READ_AHEAD + 1 and list(stored_rows(runs)) == expected


def test_a_survey_of_views_of_one_reused_buffer_finds_what_one_of_bytes_does(tmp_path: Path) -> None:
    segments = chain_of_two() + long_then_short()[1:]
    (tmp_path / "bytes").mkdir()
    (tmp_path / "views").mkdir()
    from_bytes = compiled(segments, 10, 14, tmp_path / "bytes", encode_segment)
    from_views = compile_rows(in_one_buffer(segments, tmp_path / "views"), BASE_ID, 10, 14, tmp_path / "views")
    assert from_views[0] == from_bytes[0]
    assert list(stored_rows(from_views[1])) == list(stored_rows(from_bytes[1]))


def test_a_staged_segment_that_decompresses_short_is_refused(tmp_path: Path) -> None:
    _, runs = compile_rows(in_one_buffer(long_then_short(), tmp_path), BASE_ID, 10, 14, tmp_path)
    with pytest.raises(IntegrityError, match="changed while it was replayed"):
        list(stored_rows([replace(runs[0], raw_size=runs[0].raw_size + 1), *runs[1:]]))  # a byte of its end line lost
    stored = runs[0].path.read_bytes()
    runs[0].path.write_bytes(stored[: len(stored) // 2])  # its frame cut in its records
    with pytest.raises(IntegrityError, match="changed while it was replayed"):
        list(stored_rows(runs))


def test_to_time_needs_an_offset_and_one_target() -> None:
    assert parse_time("2026-12-01T03:04:05Z") == datetime(2026, 12, 1, 3, 4, 5, tzinfo=UTC)
    assert parse_time("2026-12-01T04:04:05+01:00") == datetime(2026, 12, 1, 3, 4, 5, tzinfo=UTC)
    with pytest.raises(UsageError, match="no offset"):
        parse_time("2026-12-01T03:04:05")
    with pytest.raises(UsageError, match="RFC 3339"):
        parse_time("yesterday")
    with pytest.raises(UsageError, match="either"):
        PointTarget(revision=5, moment=datetime(2026, 1, 1, tzinfo=UTC))


def test_a_key_longer_than_one_length_byte_is_found_as_a_short_one_is(tmp_path: Path) -> None:
    long_key = b"/registry/" + b"k" * 200  # its length takes two varint bytes
    chain = [segment(Predecessor("base", 10, BASE_ID), (11, 1, [put(long_key, b"v1", 11, 11, 1)]),
                     (12, 2, [put(b"/s", b"1", 12, 12, 1)])),
             segment(Predecessor("segment", 12, "x"), (13, 3, [put(long_key, b"v2", 11, 13, 2)]))]
    facts, runs = compiled(chain, 10, 13, tmp_path, encode_segment)
    assert facts.rows == 2
    assert list(stored_rows(runs)) == [event_row(12, 0, put(b"/s", b"1", 12, 12, 1)),
                                       event_row(13, 0, put(long_key, b"v2", 11, 13, 2))]


@pytest.mark.parametrize("where", ["first", "last"])
def test_a_record_whose_value_is_too_short_to_hold_its_key_is_refused(tmp_path: Path, where: str) -> None:
    # A one-byte value: the key's tag without its length (the survey reads a record's head and
    # the first two bytes of its value at once, except near the end of the records).
    short = WatchEvent(EventType.PUT, KeyValue(b"/a", b"1", 11, 11, 1), kv_bytes=b"\n")
    events = [short, put(b"/b", b"1", 11, 11, 1)] if where == "first" else [put(b"/b", b"1", 11, 11, 1), short]
    written = [segment(Predecessor("base", 10, BASE_ID), (11, 1, events))]
    with pytest.raises(IntegrityError, match="damaged"):
        compiled(written, 10, 11, tmp_path / "v2", encode_segment_v2)
    # Version 3's survey reads the index, not the values: the replay refuses the row it would write.
    with pytest.raises(IntegrityError, match="where its index says one starts"):
        rows(written, 10, 11, tmp_path / "v3", encode_segment)


def test_a_stored_segment_is_surveyed_from_its_index_frame_alone(tmp_path: Path) -> None:
    first = chain_of_two()[0]
    path = tmp_path / "0.segment"
    path.write_bytes(as_stored(first))
    buffer = FrameBuffer()
    staged_one = checked_segment(path.read_bytes(), buffer, path, read_as_named(path), str(path))
    header = staged_one.header
    assert header.records_apart and header.body == b"" and staged_one.records_at > 0
    raw = encode_segment(first)
    assert bytes(buffer.data[:header.body_offset]) == raw[:header.body_offset], "the header and index, no more"
    assert staged_one.raw_size == len(raw) - header.body_offset, "the records frame's size, from its frame header"


def test_a_chain_of_every_version_replays_as_one(tmp_path: Path) -> None:
    """Capture upgraded mid-chain: older segments first, then segments written now."""
    encoders = (encode_segment_v1, encode_segment_v2, as_stored, encode_segment)

    def mixed(segments: list[Segment], tmp: Path) -> Iterator[StagedSegment]:
        for number, (s, encoder) in enumerate(zip(segments, encoders, strict=True)):
            (tmp / str(number)).mkdir(parents=True)
            yield from staged([s], tmp / str(number), encoder)

    deletes = history_of_deletes()
    chain = [deletes[0], *segment_split(deletes[1])]
    for up_to in (13, 15, 16, 17):
        expected = compiled(deletes, 10, up_to, tmp_path / f"{up_to}-v1", encode_segment_v1)
        found = compile_rows(mixed(chain, tmp_path / f"{up_to}-mixed"), BASE_ID, 10, up_to, tmp_path)
        # What the rows will take is said from the index where there is one, from the size of
        # the whole segment where there is none: the same rows, said differently.
        assert replace(found[0], written_bytes=0) == replace(expected[0], written_bytes=0)
        assert found[0].written_bytes > 0 and expected[0].written_bytes > 0
        assert list(stored_rows(found[1])) == list(stored_rows(expected[1]))


def segment_split(whole: Segment) -> list[Segment]:
    """``whole`` as three segments of one revision each (same events, chained)."""
    parts, previous = [], whole.previous
    for rev in whole.revisions:
        part = replace(whole, previous=previous, revisions=(rev,), leases={})
        parts.append(part)
        previous = Predecessor("segment", rev.revision, f"part-{rev.revision}")
    return parts


def test_keys_created_and_deleted_again_are_not_held_by_the_survey(
        tmp_path: Path, encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kubernetes Events come and go by the million in a long chain: the survey's memory must
    follow the keys live at a step, not every key ever created."""
    held: list[int] = []

    class Watched(replay._Survey):
        def indexed(self, index: SegmentIndex, records_bytes: int, after: int, up_to: int, number: int,
                    facts: ReplayFacts) -> None:
            super().indexed(index, records_bytes, after, up_to, number, facts)
            held.append(len(self.born) + len(self.newest))

        def records(self, body: bytes | memoryview, after: int, up_to: int, number: int,
                    facts: ReplayFacts) -> tuple[int, int, int, int]:
            found = super().records(body, after, up_to, number, facts)
            held.append(len(self.born) + len(self.newest))
            return found

    monkeypatch.setattr(replay, "_Survey", Watched)
    segments, previous, revision = [], Predecessor("base", 10, BASE_ID), 10
    for number in range(6):  # each segment creates 50 events and deletes them, and updates /node
        made = [(revision + 1 + n, 0.0, [put(b"/events/%d-%d" % (number, n), b"e", revision + 1 + n,
                                             revision + 1 + n, 1)]) for n in range(50)]
        gone = [(revision + 51 + n, 0.0, [delete(b"/events/%d-%d" % (number, n), revision + 51 + n)])
                for n in range(50)]
        node = [(revision + 101, 0.0, [put(b"/node", b"%d" % number, 1, revision + 101, number + 2)])]
        segments.append(segment(previous, *made, *gone, *node))
        previous, revision = Predecessor("segment", revision + 101, "x"), revision + 101
    facts = survey(segments, 10, revision, tmp_path, encoder)
    assert facts.events == 6 * 101 and facts.rows == 1
    assert held and max(held) == 1, f"the survey held {held}: keys gone again are still held"


@pytest.mark.parametrize("largest", [600, 3000, 9000])
def test_the_room_a_replay_says_its_rows_need_is_what_the_writer_takes_for_them(tmp_path: Path, largest: int) -> None:
    # Said before a byte is written (the restore and the drill refuse on it), so it must not
    # fall short of what the writer's pages take, nor ask for much more: a page holds rows up
    # to its size, a row over a page takes whole pages of its own.
    rng = random.Random(largest)
    values = [bytes(rng.randrange(1, largest)) for _ in range(3000)]
    rows = [(encode_revision(10 + n), value) for n, value in enumerate(values)]
    small = db_with(tmp_path / "small.db", [(encode_revision(2), encode_fields(b"/first", 2, 2, 1, b"v", 0))])
    grown = write_db(small, tmp_path / "grown.db", [BucketChanges(b"key", appends=iter(rows))], trailer=False).path
    growth = grown.stat().st_size - small.stat().st_size
    pages = LeafPages()
    for part in (values[:1000], values[1000:]):  # told in two parts, as a run per segment
        pages.add(HEAD_SIZE + len(value) for value in part)
    said = pages.bytes()
    assert growth - 4 * 4096 <= said <= growth * 1.02 + 4 * 4096, (said, growth)


def _index_wrongly(monkeypatch: pytest.MonkeyPatch, wrong: Callable[[list[IndexEntry]], list[IndexEntry]]) -> None:
    """Segments encoded from here on carry an index that ``wrong`` changed (a writer's bug), well
    formed and hashed with the rest: only its disagreement with the records is left to find."""
    monkeypatch.setattr(segments_module, "encode_index", lambda entries: encode_index(wrong(list(entries))))


def _keys_swapped(entries: list[IndexEntry]) -> list[IndexEntry]:
    first, second = entries[0], entries[1]
    return [replace(first, key=second.key), replace(second, key=first.key), *entries[2:]]


def _revision_moved(entries: list[IndexEntry]) -> list[IndexEntry]:
    # The second event of revision 11 said to be of revision 12: the counts still hold.
    return [entries[0], replace(entries[1], revision=12), *entries[2:]]


@pytest.mark.parametrize("wrong", [_keys_swapped, _revision_moved], ids=["keys-swapped", "revision-moved"])
@pytest.mark.parametrize("encoder", [as_stored, encode_segment], ids=["version-3-stored", "version-3"])
def test_a_row_whose_record_is_not_the_one_the_index_names_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wrong: Callable[[list[IndexEntry]], list[IndexEntry]],
        encoder: Encoder) -> None:
    chain = [segment(Predecessor("base", 10, BASE_ID),
                     (11, 1, [put(b"/a", b"1", 11, 11, 1), put(b"/b", b"1", 11, 11, 1)]),
                     (12, 2, [put(b"/c", b"1", 12, 12, 1)]))]
    assert len(rows(chain, 10, 12, tmp_path / "right", encoder)) == 3
    _index_wrongly(monkeypatch, wrong)
    named = r"capture segment 11\.\.12 of chain .*: the record at byte .* index and records disagree"
    with pytest.raises(IntegrityError, match=named):
        rows(chain, 10, 12, tmp_path / "wrong", encoder)


@pytest.mark.parametrize("size", [1, 127, 128, 300, 20000])
def test_the_key_field_a_row_is_checked_by_is_the_one_etcd_writes(size: int) -> None:
    key = b"k" * size
    value = encode_fields(key, 11, 11, 1, b"v", 0)
    end = replay._key_field_end(memoryview(value), 0, len(value))
    no_lease = bytes(8)  # then the lease as the record's head holds it: 8 bytes, big-endian
    assert value[end - size:end] == key and replay._key_sum(key) == zlib.crc32(no_lease, zlib.crc32(value[:end]))
    # Seeded with a revision's low half: the same bytes' CRC from that start, another per revision.
    assert replay._key_sum(key, 11) == zlib.crc32(no_lease, zlib.crc32(value[:end], 11)) != replay._key_sum(key, 12)
    # And another per lease.
    assert replay._key_sum(key, 11, 0x7777) == zlib.crc32((0x7777).to_bytes(8, "big"), zlib.crc32(value[:end], 11))


def test_a_long_keys_length_cut_off_is_past_the_value() -> None:
    value = encode_fields(b"k" * 300, 11, 11, 1, b"v", 0)
    assert replay._key_field_end(memoryview(value), 0, 2) == 3, "the length's last byte is missing"


def test_the_surveys_answer_holds_a_few_bytes_a_row_in_the_restores_memory(tmp_path: Path, encoder: Encoder) -> None:
    """The restore's process unpickles the survey's answer and keeps it through the replay: for
    a chain of a million created keys that is a million rows, so each row must cost a few bytes
    there (its offset and its key sum, which holds its revision too, in arrays), not a Python
    object per number."""
    segments, previous, revision = [], Predecessor("base", 10, BASE_ID), 10
    for number in range(4):
        created = [(revision + 1 + n, 0.0, [put(b"/configmaps/%d-%d" % (number, n), b"v", revision + 1 + n,
                                                revision + 1 + n, 1)]) for n in range(2_000)]
        segments.append(segment(previous, *created))
        previous, revision = Predecessor("segment", revision + 2_000, "x"), revision + 2_000
    facts, runs = compiled(segments, 10, revision, tmp_path, encoder)
    assert facts.rows == 8_000
    answer = pickle.dumps((facts, runs))
    tracemalloc.start()
    try:
        held = pickle.loads(answer)
        size = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held[1] == runs
    assert size / facts.rows <= 12, f"{size / facts.rows:.0f} bytes a row"


@pytest.mark.parametrize("damage", ["frame header", "records", "garbage"])
@pytest.mark.parametrize("whole", [False, True])
def test_a_segment_damaged_where_zstd_reads_first_is_an_integrity_error_not_a_crash(
        tmp_path: Path, damage: str, whole: bool) -> None:
    """A flipped byte in the first frame's header (or a segment replaced by text) raised inside
    a `with memoryview(...)`: the view could not be released while the failed read still held
    a slice of it, and the restore ended with BufferError, exit 4."""
    stored = bytearray(as_stored(chain_of_two()[0]))
    first_end = checksummed_frame_end(bytes(stored))
    assert first_end is not None
    if damage == "frame header":
        stored[2] ^= 1
    elif damage == "records":
        stored[(first_end + len(stored)) // 2] ^= 1
    else:
        stored = bytearray(b"hello\n")
    path = tmp_path / "segment"
    if damage == "records" and not whole:  # found when the replay decompresses the records, not here
        assert checked_segment(bytes(stored), FrameBuffer(), path, read_as_named(path), str(path), whole=whole)
        return
    with pytest.raises(IntegrityError):
        checked_segment(bytes(stored), FrameBuffer(), path, read_as_named(path), str(path), whole=whole)

"""Packing small capture segments: exactly the same revisions in fewer objects, and nothing a
restore may still need is deleted before a checked pack has been in the repository long enough."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pyrage
import pytest
import zstandard

from lifeboat.capture import packing
from lifeboat.capture.packing import Packer, PackResult, filled, merged, plan_chain
from lifeboat.catalog.age_keys import Identity, load_identities, parse_recipient
from lifeboat.catalog.chains import ChainInfo, ChainStore, SegmentRef, segment_name
from lifeboat.catalog.codec import frames_decompressed
from lifeboat.catalog.layout import segment_key
from lifeboat.catalog.segments import Predecessor, Segment, encode_segment
from lifeboat.catalog.timeline import build_timeline, point_at_revision
from lifeboat.clock import FakeClock
from lifeboat.errors import RepositoryUnavailable
from lifeboat.store.base import ObjectInfo
from lifeboat.store.memory import Fault, MemoryStore
from tests.support.segment_v2 import encode_segment_v2
from tests.unit.catalog.capture_records import T0, at, chain, delete, manifest, put, ref, segment

BASE = manifest("20261201T030000Z-aaaaaa", 100, 0)
CLUSTER, CHAIN = "prod", BASE.id
HOUR = timedelta(hours=1)


def small_chain(store: MemoryStore, count: int, recipients: list[str] = (),  # type: ignore[assignment]
                version_2: frozenset[int] = frozenset()) -> list[Segment]:
    """``count`` segments of two revisions each after BASE (revision 100), one every second;
    keys written, overwritten, deleted, and one on a lease; those numbered in ``version_2``
    in the format lifeboat wrote before version 3."""
    chains = ChainStore(store)
    chains.start(ChainInfo(CHAIN, CLUSTER, CHAIN, 100, "c1", BASE.finished_at))
    previous = Predecessor("base", 100, CHAIN)
    written = []
    for n in range(count):
        r = 101 + 2 * n
        events = [put(f"/k/{n}".encode(), f"v{n}".encode(), r, r, 1, lease=7 if n % 3 == 0 else 0)]
        second = [delete(f"/k/{n - 1}".encode(), r + 1)] if n else [put(b"/k/first", b"x", r + 1, r + 1, 1)]
        seg = segment(previous, (r, n, events), (r + 1, n + 0.5, second), leases={7: 60 + n} if n % 3 == 0 else {})
        if n in version_2:
            data = zstandard.ZstdCompressor(write_checksum=True).compress(encode_segment_v2(seg))
            stored = chains.put_encoded(CLUSTER, CHAIN, segment_name(seg, False), data)
        else:
            stored = chains.commit_segment(seg, [parse_recipient(x) for x in recipients], 3)
        previous = Predecessor("segment", seg.last_revision, stored.name)
        written.append(seg)
    return written


def listed(store: MemoryStore) -> tuple[SegmentRef, ...]:
    (listing,) = ChainStore(store).chains(CLUSTER)
    return listing.segments


def packer(store: MemoryStore, identities: list[Identity] | None = None, recipients: list[str] = (),  # type: ignore[assignment]
           **kw: object) -> Packer:
    return Packer(ChainStore(store), identities, [parse_recipient(x) for x in recipients], 3, **kw)  # type: ignore[arg-type]


def read(store: MemoryStore, found: SegmentRef, identities: list[Identity] | None = None) -> Segment:
    return ChainStore(store).read_segment(CLUSTER, CHAIN, found, identities)


def test_a_pack_holds_exactly_the_revisions_events_seen_times_and_leases_of_the_segments() -> None:
    clock = FakeClock(T0 + HOUR)
    store = MemoryStore(clock=clock)
    written = small_chain(store, 10)
    result = packer(store).run(CLUSTER, clock.now())
    assert (result.packs, result.packed, result.deleted) == (1, 9, 0)  # the newest stays for capture to resume after
    refs = listed(store)
    (pack,) = [r for r in refs if (r.first_revision, r.last_revision) == (101, 118)]
    got = read(store, pack)
    assert got == merged(written[:9])
    assert got.revisions == tuple(r for s in written[:9] for r in s.revisions)  # events, seen times: each kept
    assert got.previous == Predecessor("base", 100, CHAIN)
    assert dict(got.leases) == {7: 66}  # a later segment's TTL over an earlier one's, as the survey merges
    assert (pack.first_seen, pack.last_seen) == (at(0), at(8.5))


def test_records_of_a_pack_are_byte_for_byte_those_of_the_segments_it_holds() -> None:
    clock = FakeClock(T0 + HOUR)
    store = MemoryStore(clock=clock)
    small_chain(store, 5)
    before = listed(store)
    packer(store).run(CLUSTER, clock.now())
    (pack,) = [r for r in listed(store) if r not in before]
    chains = ChainStore(store)

    def records(found: SegmentRef) -> bytes:
        raw = frames_decompressed(store.get_bytes(segment_key(CLUSTER, CHAIN, found.name)))
        header = chains.check_header(raw, CLUSTER, CHAIN, found)
        return bytes(header.body)

    assert records(pack) == b"".join(records(r) for r in before[:4])


def test_a_pack_is_byte_for_byte_the_segment_capture_would_have_written_for_its_events() -> None:
    clock = FakeClock(T0 + HOUR)
    store = MemoryStore(clock=clock)
    written = small_chain(store, 7)
    before = listed(store)
    packer(store).run(CLUSTER, clock.now())
    (pack,) = [r for r in listed(store) if r not in before]
    assert pack.name == segment_name(merged(written[:6]), False)
    assert frames_decompressed(store.get_bytes(segment_key(CLUSTER, CHAIN, pack.name))) == encode_segment(merged(written[:6]))


def test_a_run_holding_a_segment_of_the_older_format_is_packed_as_the_current_one() -> None:
    clock = FakeClock(T0 + HOUR)
    store = MemoryStore(clock=clock)
    written = small_chain(store, 5, version_2=frozenset({1, 2}))
    before = listed(store)
    fetched: list[str] = []
    get_stream = store.get_stream
    store.get_stream = lambda key: (fetched.append(key), get_stream(key))[1]  # type: ignore[method-assign]
    result = packer(store).run(CLUSTER, clock.now())
    (pack,) = [r for r in listed(store) if r not in before]
    assert (result.packs, result.refused) == (1, [])
    assert sorted(fetched) == sorted(segment_key(CLUSTER, CHAIN, r.name) for r in before[:4])  # each once
    assert frames_decompressed(store.get_bytes(segment_key(CLUSTER, CHAIN, pack.name))) == encode_segment(merged(written[:4]))


def test_the_timeline_takes_a_pack_in_place_of_the_segments_it_holds_and_restores_the_same_points() -> None:
    clock = FakeClock(T0 + HOUR)
    store = MemoryStore(clock=clock)
    small_chain(store, 6)
    (window_before,) = build_timeline(CLUSTER, [BASE], ChainStore(store).chains(CLUSTER)).windows
    packer(store).run(CLUSTER, clock.now())
    (window,) = build_timeline(CLUSTER, [BASE], ChainStore(store).chains(CLUSTER)).windows
    assert [(s.first_revision, s.last_revision) for s in window.segments] == [(101, 110), (111, 112)]
    assert (window.first_revision, window.last_revision, window.first_time, window.last_time) == (
        window_before.first_revision, window_before.last_revision, window_before.first_time, window_before.last_time)
    point = point_at_revision(build_timeline(CLUSTER, [BASE], ChainStore(store).chains(CLUSTER)), 105)
    assert [(s.first_revision, s.last_revision) for s in point.segments] == [(101, 110)]


def test_the_timeline_prefers_a_pack_starting_where_a_segment_it_holds_starts() -> None:
    # Sorted by name, the first small segment (101..102) comes before the pack (101..106): the
    # run took both, and a restore fetched a segment the pack holds.
    smalls = [ref(101, 102, 1, 1), ref(103, 104, 2, 2), ref(105, 106, 3, 3), ref(107, 108, 4, 4)]
    pack = ref(101, 106, 1, 3)
    (window,) = build_timeline(CLUSTER, [BASE], [chain(BASE, sorted([*smalls, pack]))]).windows
    assert window.segments == (pack, smalls[3])


def test_what_a_pack_holds_is_deleted_only_once_the_pack_is_old_enough_and_read_back_whole() -> None:
    clock = FakeClock(T0 + HOUR)
    store = MemoryStore(clock=clock)
    small_chain(store, 8)
    work = packer(store, delete_after=timedelta(minutes=30))
    work.run(CLUSTER, clock.now())
    assert len(listed(store)) == 9
    clock.advance(29 * 60)
    again = work.run(CLUSTER, clock.now())
    assert (again.packs, again.deleted, again.waiting) == (0, 0, 7)
    clock.advance(60)
    done = work.run(CLUSTER, clock.now())
    assert (done.packs, done.deleted, done.waiting, done.refused) == (0, 7, 0, [])
    assert [(r.first_revision, r.last_revision) for r in listed(store)] == [(101, 114), (115, 116)]


def test_segments_held_by_a_damaged_pack_are_kept_and_the_refusal_names_the_pack() -> None:
    clock = FakeClock(T0 + HOUR)
    store = MemoryStore(clock=clock)
    small_chain(store, 4)
    before = listed(store)
    work = packer(store, delete_after=timedelta(0))
    work.run(CLUSTER, clock.now())
    (pack,) = [r for r in listed(store) if r not in before]
    key = segment_key(CLUSTER, CHAIN, pack.name)
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2] ^= 0xFF
    store.put_bytes(key, bytes(data))
    clock.advance(1)
    result = work.run(CLUSTER, clock.now())
    assert result.deleted == 0 and len(result.refused) == 1 and pack.name in result.refused[0]
    assert set(before) <= set(listed(store))


class GoneOnceListed(MemoryStore):
    """A listing that still shows ``gone``, deleted right after (by a prune, another pack)."""

    gone = ""

    def list(self, prefix: str = "", *, after: str = "") -> Iterator[ObjectInfo]:
        listed = list(super().list(prefix, after=after))
        if self.gone:
            self.delete(self.gone)
        return iter(listed)


@pytest.mark.parametrize("damage", ["flip", "missing"])
def test_a_damaged_or_missing_segment_is_not_packed_and_nothing_is_deleted(damage: str) -> None:
    clock = FakeClock(T0 + HOUR)
    store = GoneOnceListed(clock=clock)
    small_chain(store, 5)
    before = listed(store)
    key = segment_key(CLUSTER, CHAIN, before[2].name)
    if damage == "flip":
        data = bytearray(store.get_bytes(key))
        data[-5] ^= 0x01
        store.put_bytes(key, bytes(data))
    else:
        store.gone = key
    result = packer(store, delete_after=timedelta(0)).run(CLUSTER, clock.now())
    assert result.packs == 0 and len(result.refused) == 1 and before[2].name in result.refused[0]
    store.gone = ""
    assert {r.name for r in listed(store)} == {r.name for r in before} - ({before[2].name} if damage == "missing" else set())


def test_encrypted_segments_are_packed_encrypted_and_never_without_a_recipient(tmp_path) -> None:  # type: ignore[no-untyped-def]
    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "age-key.txt"
    key_file.write_text(f"{identity}\n")
    key_file.chmod(0o600)
    identities = load_identities([str(key_file)])
    public = str(identity.to_public())
    clock = FakeClock(T0 + HOUR)
    store = MemoryStore(clock=clock)
    written = small_chain(store, 4, [public])
    before = listed(store)
    refused = packer(store, identities).run(CLUSTER, clock.now())
    assert refused.packs == 0 and "no recipient" in refused.refused[0] and listed(store) == before
    no_key = packer(store, None, [public]).run(CLUSTER, clock.now())
    assert no_key.packs == 0 and "encrypted" in no_key.refused[0] and listed(store) == before
    done = packer(store, identities, [public]).run(CLUSTER, clock.now())
    assert (done.packs, done.refused) == (1, [])
    (pack,) = [r for r in listed(store) if r not in before]
    assert pack.encrypted and read(store, pack, identities) == merged(written[:3])
    assert b"/k/1" not in store.get_bytes(segment_key(CLUSTER, CHAIN, pack.name))


def test_plan_packs_only_old_small_consecutive_segments_of_one_kind_and_never_the_newest() -> None:
    now = T0 + HOUR
    old = [replace(ref(101 + n, 101 + n, n, n), size=1000) for n in range(6)]
    # A large one, a jump in revisions, an encrypted one, a JSON-lines one: each ends a run.
    large = replace(ref(107, 107, 7, 7), size=2 << 20)
    after_large = [replace(ref(108 + n, 108 + n, 8 + n, 8 + n), size=1000) for n in range(2)]
    jumped = [replace(ref(200 + n, 200 + n, 20 + n, 20 + n), size=1000) for n in range(2)]
    encrypted = replace(ref(202, 202, 22, 22), size=1000, name="x.seg.zst.age")
    legacy = replace(ref(203, 203, 23, 23), size=1000, name="x.jsonl.zst")
    fresh = [replace(ref(204 + n, 204 + n, 3600 - 60 + n, 3600 - 60 + n), size=1000) for n in range(3)]
    refs = [*old, large, *after_large, *jumped, encrypted, legacy, *fresh]
    refs = [r if ".age" in r.name or "jsonl" in r.name else replace(r, name=r.name + ".seg.zst") for r in refs]
    plan = plan_chain(chain(BASE, sorted(refs)), now, pack_bytes=3000)
    spans = [(run[0].first_revision, run[-1].last_revision) for run in plan.runs]
    assert spans == [(101, 103), (104, 106), (108, 109), (200, 201)]
    assert plan.held == () and plan.waiting == 0


def test_a_segment_held_by_a_longer_one_is_found_among_many_in_one_pass() -> None:
    now = T0 + HOUR
    smalls = [replace(ref(101 + n, 101 + n, n, n), modified=now - HOUR) for n in range(50_000)]
    packs = [replace(ref(101 + n, 101 + n + 999, n, n + 999), modified=now - HOUR) for n in range(0, 50_000, 1000)]
    twin = replace(smalls[5], name=smalls[5].name + "-twin")  # the same range from another writer: held too
    plan = plan_chain(chain(BASE, sorted([*smalls, *packs, twin])), now)
    assert len(plan.held) == 50_001 and {h for _, h in plan.held} == set(packs)
    assert plan.runs == ()


def test_a_pack_holds_at_most_the_records_bytes_allowed_and_the_rest_of_the_run_makes_more_packs() -> None:
    clock = FakeClock(T0 + HOUR)
    store = MemoryStore(clock=clock)
    written = small_chain(store, 10)
    before = listed(store)
    sizes = [len(ChainStore(store).check_header(
        frames_decompressed(store.get_bytes(segment_key(CLUSTER, CHAIN, r.name))), CLUSTER, CHAIN, r).body) for r in before]
    limit = sum(sizes[:3])  # three segments' records a pack
    result = packer(store, pack_records_bytes=limit).run(CLUSTER, clock.now())
    packs = sorted(r for r in listed(store) if r not in before)
    assert (result.packs, result.packed, result.refused) == (3, 9, [])
    assert [(p.first_revision, p.last_revision) for p in packs] == [(101, 106), (107, 112), (113, 118)]
    assert [read(store, p) for p in packs] == [merged(written[0:3]), merged(written[3:6]), merged(written[6:9])]


@pytest.mark.parametrize("sizes, limit, expected", [
    ([1, 1, 1, 1], 2, [[1, 1], [1, 1]]),
    ([5, 1, 1], 2, [[5], [1, 1]]),  # one larger than the limit stands alone
    ([1, 5, 1], 2, [[1], [5], [1]]),
    ([3], 2, [[3]]),
    ([], 2, []),
])
def test_groups_add_up_to_the_limit_in_order(sizes: list[int], limit: int, expected: list[list[int]]) -> None:
    assert list(filled(sizes, lambda n: n, limit)) == expected


def test_a_group_is_given_before_more_than_one_item_after_it_is_read() -> None:
    read: list[int] = []

    def items() -> Iterator[int]:
        for n in range(6):
            read.append(n)
            yield 1

    given = 0
    for group in filled(items(), lambda n: n, 2):
        given += len(group)
        assert len(read) <= given + 1, "read further ahead than the item that did not fit"
    assert given == len(read) == 6


def test_a_run_of_values_that_compress_well_is_packed_holding_about_one_pack_of_records() -> None:
    # 40 segments of 1 MB of records each, 40 MB in all, stored in a few KB: a run by stored size.
    import tracemalloc
    clock = FakeClock(T0 + HOUR)
    store = MemoryStore(clock=clock)
    chains = ChainStore(store)
    chains.start(ChainInfo(CHAIN, CLUSTER, CHAIN, 100, "c1", BASE.finished_at))
    previous = Predecessor("base", 100, CHAIN)
    for n in range(40):
        r = 101 + n
        seg = segment(previous, (r, n, [put(b"/big", bytes([n]) * 1_000_000, 101, r, n + 1)]))
        previous = Predecessor("segment", r, chains.commit_segment(seg, [], 3).name)
    assert sum(r.size for r in listed(store)) < 4 << 20
    tracemalloc.start()
    try:
        result = packer(store).run(CLUSTER, clock.now())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (result.packs, result.packed, result.refused) == (10, 39, [])  # 4 segments' records a pack
    assert peak < 30_000_000, f"{peak:,} bytes held at once"  # 47 MB when a run was fetched whole


@pytest.mark.parametrize("operation, after", [("put_bytes", 0), ("delete", 0), ("delete", 3)],
                         ids=["pack-write", "first-delete", "fourth-delete"])
def test_a_pass_cut_off_at_any_write_leaves_a_whole_chain_and_the_next_pass_finishes(operation: str,
                                                                                     after: int) -> None:
    clock = FakeClock(T0 + HOUR)
    store = MemoryStore(clock=clock)
    written = small_chain(store, 8)
    (before,) = build_timeline(CLUSTER, [BASE], ChainStore(store).chains(CLUSTER)).windows
    work = packer(store, delete_after=timedelta(0))
    if operation == "put_bytes":
        store.inject(Fault(operation, after, key_prefix="clusters/prod/chains/"))
        with pytest.raises(RepositoryUnavailable):
            work.run(CLUSTER, clock.now())
    else:
        work.run(CLUSTER, clock.now())
        store.inject(Fault(operation, after))
        with pytest.raises(RepositoryUnavailable):
            work.run(CLUSTER, clock.now())
    (cut,) = build_timeline(CLUSTER, [BASE], ChainStore(store).chains(CLUSTER)).windows
    assert (cut.first_revision, cut.last_revision, cut.last_time) == (before.first_revision, before.last_revision,
                                                                       before.last_time)
    work.run(CLUSTER, clock.now())
    work.run(CLUSTER, clock.now())
    refs = listed(store)
    assert [(r.first_revision, r.last_revision) for r in refs] == [(101, 114), (115, 116)]
    assert read(store, refs[0]) == merged(written[:7])


def test_packs_that_overlap_in_part_keep_every_revision_and_what_they_hold_goes() -> None:
    # Two passes that cut one run differently (each planned from its own listing).
    from lifeboat.catalog.segments import joined_frames
    clock = FakeClock(T0 + HOUR)
    store = MemoryStore(clock=clock)
    written = small_chain(store, 10)
    chains = ChainStore(store)
    smalls = listed(store)

    def pack_of(refs: tuple[SegmentRef, ...]) -> None:
        headers = [chains.check_header(frames_decompressed(store.get_bytes(segment_key(CLUSTER, CHAIN, r.name))),
                                       CLUSTER, CHAIN, r) for r in refs]
        chains.commit_frames(CLUSTER, CHAIN, segment_name(merged([read(store, r) for r in refs]), False),
                             joined_frames(headers), (), 3)

    pack_of(smalls[0:6])  # revisions 101..112
    pack_of(smalls[3:9])  # revisions 107..118
    clock.advance(1)
    work = packer(store, delete_after=timedelta(0))
    assert work.run(CLUSTER, clock.now()).deleted == 9 and work.run(CLUSTER, clock.now()).packs == 0
    assert [(r.first_revision, r.last_revision) for r in listed(store)] == [(101, 112), (107, 118), (119, 120)]
    (window,) = build_timeline(CLUSTER, [BASE], chains.chains(CLUSTER)).windows
    covered, replayed = 100, []
    for found in window.segments:  # as a restore applies them: each revision after what came before
        replayed += [r for r in read(store, found).revisions if r.revision > covered]
        covered = found.last_revision
    assert replayed == [r for s in written for r in s.revisions]


def test_a_pass_asked_to_stop_ends_before_its_next_pack_or_deletion(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    monkeypatch.setattr(packing, "DELETE_BATCH", 2)  # a deletion under way: a batch of 2 (one S3 request)
    clock = FakeClock(T0 + HOUR)
    store = MemoryStore(clock=clock)
    small_chain(store, 10)
    before = listed(store)
    stop = threading.Event()
    stop.set()
    work = packer(store, delete_after=timedelta(0))
    assert work.run(CLUSTER, clock.now(), stop) == PackResult() and listed(store) == before
    stop.clear()
    assert work.run(CLUSTER, clock.now(), stop).packs == 1
    original = store.delete

    def delete_then_stop(key: str) -> None:
        original(key)
        stop.set()

    store.delete = delete_then_stop  # type: ignore[method-assign]
    result = work.run(CLUSTER, clock.now(), stop)
    assert result.deleted == 2 and len(listed(store)) == len(before) + 1 - result.deleted

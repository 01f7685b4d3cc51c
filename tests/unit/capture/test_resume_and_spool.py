"""Where capture resumes, how segments are cut, and the bounded spool."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path

import pyrage
import pytest

from lifeboat.capture.resume import decide_resume
from lifeboat.capture.segmenter import SegmentBuilder, group_revisions, revisions_of
from lifeboat.capture.spool import Spool, SpoolFull
from lifeboat.catalog.age_keys import load_recipients
from lifeboat.catalog.chains import ChainStore
from lifeboat.catalog.codec import encrypting
from lifeboat.catalog.segments import CapturedRevision, Predecessor, encode_segment_frames
from lifeboat.etcdapi.model import ReceivedEvents, WatchEvent
from lifeboat.snapshot.replay import encode_key_value
from tests.unit.catalog.capture_records import at, chain, delete, manifest, put, ref

BASE = manifest("20261201T030000Z-aaaaaa", 100, 0)


def test_resume_continues_after_the_last_segment_of_the_open_chain() -> None:
    decision = decide_resume("prod", [BASE], [chain(BASE, [ref(101, 150, 1, 2)])], "c1")
    assert decision.info is not None and decision.gap is None
    assert decision.previous == Predecessor("segment", 150, ref(101, 150, 1, 2).name)


def test_resume_of_a_chain_without_segments_starts_after_its_base() -> None:
    decision = decide_resume("prod", [BASE], [chain(BASE, [])], "c1")
    assert decision.previous == Predecessor("base", 100, BASE.id)


def test_no_open_chain_means_a_new_base() -> None:
    decision = decide_resume("prod", [BASE], [chain(BASE, [ref(101, 150, 1, 2)], gap="compacted")], "c1")
    assert decision.info is None and decision.gap is None


@pytest.mark.parametrize("listing, cluster_id, words", [
    (chain(BASE, [ref(101, 150, 1, 2)]), "c2", "now cluster c2"),
    (chain(BASE, [ref(101, 120, 1, 2), ref(131, 150, 3, 4)]), "c1", "121..130"),
])
def test_a_chain_that_cannot_be_continued_gets_a_gap_and_a_new_base(listing: object, cluster_id: str,
                                                                     words: str) -> None:
    decision = decide_resume("prod", [BASE], [listing], cluster_id)  # type: ignore[list-item]
    assert decision.info is None
    assert decision.gap is not None and words in decision.gap[2]


@pytest.mark.parametrize("seconds_since_written, busy", [(30, True), (61, True), (63, False), (3600, False)])
def test_a_chain_of_another_etcd_cluster_is_cut_only_once_it_is_quiet(seconds_since_written: int, busy: bool) -> None:
    """Written lately, it may be another cluster's capture under the same name (cutting its chain
    with a gap would end that capture's window while it goes on writing): wait; quiet for two
    heartbeats and flushes, it is a chain whose cluster was restored or replaced: cut it."""
    listing = chain(BASE, [ref(101, 150, 1, 2)])  # last written at(2)
    decision = decide_resume("prod", [BASE], [listing], "c2", at(2 + seconds_since_written), quiet_seconds=62)
    if busy:
        assert decision.gap is None and decision.info is None and decision.busy is not None
        assert "follows etcd cluster c1" in decision.busy and "its own --cluster" in decision.busy
    else:
        assert decision.busy is None and decision.gap is not None and "now cluster c2" in decision.gap[2]


def test_resume_without_its_base_backup_records_a_gap() -> None:
    decision = decide_resume("prod", [], [chain(BASE, [ref(101, 150, 1, 2)])], "c1")
    assert decision.gap is not None and "no longer exists" in decision.gap[2]


def test_watch_batch_is_grouped_into_whole_revisions_in_order() -> None:
    events = [put(b"/a", b"", 5, 5, 1), put(b"/b", b"", 6, 6, 1), put(b"/c", b"", 6, 6, 1)]
    grouped = group_revisions(events, at(1))
    assert [(r.revision, len(r.events)) for r in grouped] == [(5, 1), (6, 2)]


def _added(builder: SegmentBuilder, revisions: list[CapturedRevision]) -> None:
    """Add each of ``revisions``, which must fit."""
    for revision in revisions:
        assert builder.add(revision)


def test_segment_closes_after_the_flush_interval_or_at_its_size() -> None:
    builder = SegmentBuilder(flush_interval=1.0, max_bytes=10_000)
    _added(builder, group_revisions([put(b"/a", b"x", 5, 5, 1)], at(0)))
    assert not builder.due(at(0.9)) and builder.due(at(1.0))
    big = SegmentBuilder(flush_interval=60, max_bytes=10_000)
    _added(big, group_revisions([put(b"/a", b"x" * 7_000, 5, 5, 1)], at(0)))
    assert not big.due(at(0))
    # A single revision larger than the room is taken by an empty segment, which is then due.
    huge = SegmentBuilder(flush_interval=60, max_bytes=10_000)
    _added(huge, group_revisions([put(b"/b", b"x" * 9_000, 6, 6, 1)], at(0)))
    assert huge.size >= huge.limit and huge.due(at(0))


def test_a_revision_that_would_take_a_segment_past_its_stored_size_is_refused() -> None:
    builder = SegmentBuilder(flush_interval=60, max_bytes=10_000)
    (first,) = group_revisions([put(b"/a", b"x" * 6_000, 5, 5, 1)], at(0))
    (second,) = group_revisions([put(b"/b", b"x" * 2_000, 6, 6, 1)], at(0))
    (huge,) = group_revisions([put(b"/c", b"x" * 50_000, 7, 7, 1)], at(0))
    assert builder.add(first)
    size = builder.size
    assert not builder.add(huge) and builder.size == size and builder.revisions == [first]
    assert builder.add(second) and builder.revisions == [first, second]
    # age's header and each lease's TTL in the segment's header leave less room for records.
    encrypted = SegmentBuilder(flush_interval=60, max_bytes=10_000, envelope=2_000)
    assert encrypted.add(first)
    assert encrypted.limit == builder.limit - 2_000 and not encrypted.add(second)
    leased = SegmentBuilder(flush_interval=60, max_bytes=10_000)
    leased.leases.update({n: 60 for n in range(1, 40)})
    assert leased.add(first) and not leased.add(second)
    empty = SegmentBuilder(flush_interval=60, max_bytes=10_000)
    assert empty.add(huge)  # an empty segment takes any one revision


def _as_watched(event: WatchEvent) -> WatchEvent:
    """``event`` with its KeyValue bytes kept, as capture's watch decode keeps them."""
    return dataclasses.replace(event, kv_bytes=encode_key_value(event.kv)) if event.kv_bytes is None else event


@pytest.mark.parametrize("kept", [True, False])
def test_a_segments_size_is_its_records_index_and_seen_times_not_a_json_estimate(kept: bool) -> None:
    # Node lease renewals, a large object, a three-operation transaction with a delete.
    batches = [[put(b"/registry/leases/kube-node-lease/node-%d" % n, b"r" * 400, 90, 100 + n, 11, 7)
                for n in range(50)],
               [put(b"/registry/pods/default/web-0", b"p" * 4_000, 151, 151, 1)],
               [put(b"/registry/events/default/e1", b"e" * 800, 152, 152, 1, 8),
                put(b"/registry/events/default/e2", b"e" * 800, 152, 152, 1, 8),
                delete(b"/registry/events/default/e0", 152)]]
    builder = SegmentBuilder(flush_interval=1.0, max_bytes=1 << 20)
    for n, events in enumerate(batches):
        _added(builder, group_revisions([_as_watched(e) if kept else e for e in events], at(n / 10)))
    size = builder.size
    first, records = encode_segment_frames(builder.close("prod", "c", Predecessor("base", 99, "b")))
    header = json.loads(first.split(b"\n", 1)[0])
    counted = header["index"]["bytes"] + header["index"]["records_bytes"]
    seen = len(json.dumps(header["seen"], separators=(",", ":")))
    written = counted + seen
    # Exactly the records and index with the watch's bytes, a little more without; never less.
    # (The JSON-era estimate, 160 + 4/3 of key and value per event, said 1.4x.)
    assert written <= size <= written * (1.0 if kept else 1.1) + 3 * 52
    assert len(first) + len(records) < size + 1024  # the header's fixed fields and end line


def test_the_envelope_left_out_of_a_segments_room_is_what_age_adds_for_its_recipients(rsa_recipients: list[str]) -> None:
    recipients = load_recipients([str(pyrage.x25519.Identity.generate().to_public()), rsa_recipients[0]])
    envelope = ChainStore.envelope_bytes(recipients)
    assert envelope > 800  # a 4096-bit RSA stanza alone is about 700 bytes
    # The same every time (the grease stanza rage adds at random is counted at its largest).
    assert {ChainStore.envelope_bytes(recipients) for _ in range(50)} == {envelope}
    added = []
    for size in (1, 65_536, 200_000) * 100:  # each header gets a random grease stanza
        sealed = b"".join(encrypting([os.urandom(size)], recipients))
        added.append(len(sealed) - size - 16 * ((size - 1) // 65_536))
    assert max(added) <= envelope and min(added) >= envelope - 2 * 209  # at most, and not far above
    assert ChainStore.envelope_bytes([]) == 0


def test_a_segment_is_due_once_its_oldest_arrival_plus_the_interval_less_the_commit_lead_is_reached() -> None:
    builder = SegmentBuilder(flush_interval=1.0, max_bytes=10_000)
    _added(builder, group_revisions([put(b"/a", b"x", 5, 5, 1)], at(0)))
    _added(builder, group_revisions([put(b"/b", b"x", 6, 6, 1)], at(0.5)))  # a later revision changes nothing
    assert not builder.due(at(0.75), lead=0.2) and builder.due(at(0.8), lead=0.2)
    assert builder.seconds_left(at(0.5), lead=0.2) == pytest.approx(0.3)


def test_revisions_are_seen_when_their_watch_response_arrived_not_when_capture_took_them() -> None:
    arrived = [ReceivedEvents(at(1).timestamp(), (put(b"/a", b"", 5, 5, 1),)),
               ReceivedEvents(at(2.5).timestamp(), (put(b"/b", b"", 6, 6, 1), put(b"/c", b"", 6, 6, 1)),
                              written_after=at(2).timestamp())]
    assert [(r.revision, r.seen, len(r.events), after) for r, after in revisions_of(arrived)] == [
        (5, at(1), 1, None), (6, at(2.5), 2, at(2))]


def test_a_segment_of_a_lagging_feed_is_due_an_interval_after_its_oldest_revision_may_have_been_written() -> None:
    """A pass's revisions arrive up to a pass later than they were written; the flush interval
    counts from the earliest they can have been, so each is committed within it of its write."""
    builder = SegmentBuilder(flush_interval=1.0, max_bytes=10_000)
    (first,) = group_revisions([put(b"/a", b"x", 5, 5, 1)], at(0.6))
    assert builder.add(first, written_after=at(0))
    (later,) = group_revisions([put(b"/b", b"x", 6, 6, 1)], at(1.1))
    assert builder.add(later, written_after=at(0.5))  # a later pass's changes nothing
    assert builder.since == at(0)
    assert not builder.due(at(0.79), lead=0.2) and builder.due(at(0.8), lead=0.2)
    builder.close("prod", "chain", Predecessor("base", 4, "base"))
    assert builder.since is None and builder.seconds_left(at(5)) == 0.0
    (alone,) = group_revisions([put(b"/c", b"x", 7, 7, 1)], at(3))
    assert builder.add(alone) and builder.since == at(3)  # no bound known: from when it was seen


def test_spool_uploads_in_order_and_keeps_what_failed(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1000)
    spool.add("chain", "a.jsonl.zst", b"1" * 100)
    spool.add("chain", "b.jsonl.zst", b"2" * 100)
    uploaded: list[str] = []

    def flaky(chain: str, name: str, data: bytes) -> None:
        if name.startswith("b"):
            raise OSError("down")
        uploaded.append(name)

    with pytest.raises(OSError):
        spool.drain(flaky)
    assert uploaded == ["a.jsonl.zst"] and len(spool) == 1
    assert spool.drain(lambda c, n, d: uploaded.append(n)) == 1
    assert uploaded == ["a.jsonl.zst", "b.jsonl.zst"] and len(spool) == 0


def test_spool_refuses_a_segment_past_its_limit(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 150)
    spool.add("chain", "a", b"1" * 100)
    with pytest.raises(SpoolFull):
        spool.add("chain", "b", b"2" * 100)
    assert len(spool) == 1


def test_spool_takes_segments_while_another_thread_drains_it(tmp_path: Path) -> None:
    """Capture's loop adds while its upload thread drains: neither may trip over the other's
    files, and every segment goes up once, in order."""
    spool = Spool(tmp_path, 1 << 30)
    uploaded: list[str] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def drain() -> None:
        try:
            while not done.is_set() or len(spool):
                spool.drain(lambda chain, name, data: uploaded.append(name))
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    drainer = threading.Thread(target=drain)
    drainer.start()
    added = 0
    try:
        while added < 300 and not failures:
            spool.add("chain", f"{added:06d}.seg", b"s" * 100)
            added += 1
    finally:
        done.set()
        drainer.join(10)
    assert failures == []
    assert uploaded == [f"{i:06d}.seg" for i in range(added)]
    assert len(spool) == 0 and spool.size == 0


def test_a_segment_size_that_leaves_less_than_half_for_events_is_refused_naming_the_smallest(
        tmp_path: Path, rsa_recipients: list[str]) -> None:
    from lifeboat.capture.run import capture_options
    from lifeboat.config import load_config
    from lifeboat.errors import UsageError

    rsa = rsa_recipients  # each 4096-bit RSA stanza is about 700 bytes of age's header

    def options(size: str, recipients: list[str]) -> object:
        path = tmp_path / "lifeboat.yaml"
        path.write_text(json.dumps({"capture": {"enabled": True, "segment-max-bytes": size},
                                    "encryption": {"recipients": recipients}}))
        return capture_options(load_config(path), ("http://127.0.0.1:2379",), "prod")

    with pytest.raises(UsageError, match=r"segment-max-bytes 4096 leaves less than half .* 3 encryption "
                                         r"recipient\(s\) .* use at least (\d+)KiB") as refused:
        options("4KiB", rsa)
    smallest = int(str(refused.value).rsplit("at least ", 1)[1].removesuffix("KiB"))
    assert 6 <= smallest <= 9
    assert "ssh-rsa" not in str(refused.value)
    options(f"{smallest}KiB", rsa)  # the size it names is accepted
    with pytest.raises(UsageError):
        options(f"{smallest - 1}KiB", rsa)
    options("4KiB", [str(pyrage.x25519.Identity.generate().to_public())])  # one X25519 stanza fits
    options("4KiB", [])  # unencrypted, the least size allowed leaves room (config validate relies on it)


def test_a_spool_directory_that_cannot_be_made_is_a_configuration_error(tmp_path: Path) -> None:
    """It was exit 1 ("operation failed"), where --tmp-dir naming no directory is exit 3."""
    from lifeboat.errors import UsageError

    (tmp_path / "a-file").write_text("")
    with pytest.raises(UsageError, match="capture.spool-dir") as refused:
        Spool(tmp_path / "a-file" / "prod", 1 << 20)
    assert "a-file" in str(refused.value) and "\n" not in str(refused.value)


def test_a_spooled_segments_name_is_made_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rename that keeps a spooled segment was not flushed to disk: a power loss could
    lose a segment the chain needs, which capture had counted as kept."""
    from lifeboat.capture import spool as spool_module

    directory = tmp_path / "prod"
    spool = Spool(directory, 1 << 20)
    synced: list[Path] = []
    monkeypatch.setattr(spool_module, "fsync_dir", synced.append)
    spool.add("c", "y.seg.zst", b"data")
    assert synced == [directory] and len(spool) == 1

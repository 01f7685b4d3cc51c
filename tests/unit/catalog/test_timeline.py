"""Timeline: windows of base + unbroken chain, gaps with reasons, and choosing a restore point."""

from __future__ import annotations

import pytest

from lifeboat.catalog.chains import shared_revisions
from lifeboat.catalog.segments import Predecessor
from lifeboat.catalog.timeline import build_timeline, point_at_revision, point_at_time
from lifeboat.errors import UsageError
from tests.unit.catalog.capture_records import at, chain, manifest, put, ref, segment

B1 = manifest("20261201T030000Z-aaaaaa", 100, 0)
B2 = manifest("20261201T031000Z-bbbbbb", 300, 600)


def two_chains_with_a_compaction_gap() -> object:
    first = chain(B1, [ref(101, 150, 1, 2), ref(151, 200, 3, 4)], gap="etcd compacted revision 201 under the watch")
    second = chain(B2, [ref(301, 310, 601, 602)])
    return build_timeline("prod", [B1, B2], [first, second])


def test_a_base_and_its_unbroken_chain_make_one_window() -> None:
    timeline = build_timeline("prod", [B1], [chain(B1, [ref(101, 150, 1, 2), ref(151, 200, 3, 4)])])
    (window,) = timeline.windows
    assert (window.first_revision, window.last_revision) == (100, 200)
    assert (window.first_time, window.last_time) == (at(0), at(4))
    assert window.capturing and timeline.gaps == ()


def test_a_recorded_gap_separates_windows_with_its_reason() -> None:
    timeline = two_chains_with_a_compaction_gap()
    (gap,) = timeline.gaps  # type: ignore[attr-defined]
    assert (gap.after_revision, gap.before_revision) == (200, 300)
    assert "compacted" in gap.reason


def test_a_missing_segment_ends_the_window_and_is_reported() -> None:
    timeline = build_timeline("prod", [B1], [chain(B1, [ref(101, 150, 1, 2), ref(171, 200, 3, 4)])])
    (window,) = timeline.windows
    assert window.last_revision == 150 and not window.capturing
    (gap,) = timeline.gaps
    assert "151..170" in gap.reason and gap.before_revision is None and gap.missing


def test_a_recorded_gap_is_not_segments_missing() -> None:
    (gap,) = two_chains_with_a_compaction_gap().gaps  # type: ignore[attr-defined]
    assert not gap.missing


def test_a_chain_whose_base_is_gone_without_a_synthetic_backup_is_said(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        timeline = build_timeline("prod", [], [chain(B1, [ref(101, 150, 1, 2)])])
    assert timeline.windows == () and f"its base backup {B1.id} is not in the repository" in caplog.text
    assert "its 1 segment(s) cannot be restored" in caplog.text


def test_overlapping_copies_of_a_range_do_not_break_the_chain() -> None:
    timeline = build_timeline("prod", [B1], [chain(B1, [ref(101, 120, 1, 1), ref(101, 150, 1, 2), ref(151, 160, 3, 3)])])
    assert timeline.windows[0].last_revision == 160 and timeline.gaps == ()


def test_heartbeat_extends_the_window_in_time_only_when_nothing_is_missing() -> None:
    quiet = build_timeline("prod", [B1], [chain(B1, [ref(101, 150, 1, 2)], beat=(150, 60))])
    assert quiet.windows[0].last_time == at(60)
    lost_tail = build_timeline("prod", [B1], [chain(B1, [ref(101, 150, 1, 2)], beat=(170, 60))])
    assert lost_tail.windows[0].last_time == at(2)
    assert "missing" in lost_tail.gaps[0].reason


def test_a_chain_starts_at_its_recorded_base_revision_above_a_compacted_tombstone() -> None:
    timeline = build_timeline("prod", [B1], [chain(B1, [ref(103, 150, 1, 2)], base_revision=102)])
    assert (timeline.windows[0].first_revision, timeline.windows[0].last_revision) == (102, 150)


def test_point_at_revision_uses_the_newest_base_and_only_the_segments_up_to_it() -> None:
    timeline = two_chains_with_a_compaction_gap()
    point = point_at_revision(timeline, 160)  # type: ignore[arg-type]
    assert point.base.id == B1.id and point.base_revision == 100
    assert [s.first_revision for s in point.segments] == [101, 151]
    assert point_at_revision(timeline, 300).segments == ()  # type: ignore[arg-type]


@pytest.mark.parametrize("revision, words", [
    (50, ["before the oldest backup", "oldest restorable point is revision 100"]),
    (250, ["falls in a gap", "compacted", "revision 200", "revision 300"]),
    (311, ["after the newest captured point", "revision 310"]),
])
def test_unrestorable_revision_names_the_nearest_restorable_points(revision: int, words: list[str]) -> None:
    with pytest.raises(UsageError) as error:
        point_at_revision(two_chains_with_a_compaction_gap(), revision)  # type: ignore[arg-type]
    for word in words:
        assert word in str(error.value)


def test_point_at_time_reads_only_the_straddling_segment() -> None:
    timeline = two_chains_with_a_compaction_gap()
    inside = segment(Predecessor("segment", 150, "x"),
                     (151, 3.0, [put(b"/a", b"1", 151, 151, 1)]),
                     (160, 3.5, [put(b"/a", b"2", 151, 160, 2)]),
                     (200, 4.0, [put(b"/a", b"3", 151, 200, 3)]))
    read: list[int] = []

    def reader(window: object, r: object) -> object:
        read.append(r.first_revision)  # type: ignore[attr-defined]
        return inside

    point = point_at_time(timeline, at(3.7), at(9999), reader)  # type: ignore[arg-type]
    assert point.revision == 160 and read == [151]
    assert point_at_time(timeline, at(2.5), at(9999), reader).revision == 150  # type: ignore[arg-type]


def test_a_time_in_the_future_is_refused() -> None:
    with pytest.raises(UsageError, match="in the future"):
        point_at_time(two_chains_with_a_compaction_gap(), at(100), at(50), lambda w, r: None)  # type: ignore[arg-type]


def synthetic(backup_id: str, revision: int, seconds: float, chain_of: object, seen: str | None = None) -> object:
    from lifeboat.catalog.timeline import SYNTHETIC_CHAIN, SYNTHETIC_SEEN
    labels = {SYNTHETIC_CHAIN: chain_of.id}  # type: ignore[attr-defined]
    if seen is not None:
        labels[SYNTHETIC_SEEN] = seen
    return manifest(backup_id, revision, seconds).model_copy(update={"labels": labels})


def test_a_chain_whose_base_is_deleted_starts_at_its_oldest_synthetic_backup() -> None:
    folded = synthetic("20261201T031500Z-ssssss", 160, 900, B1, seen="2026-12-01T03:00:03.200Z")
    later = synthetic("20261201T031600Z-tttttt", 230, 960, B1)
    # B1 and segment 101..150 were pruned; 151..200 straddles the synthetic backup's revision.
    timeline = build_timeline("prod", [folded, later], [chain(B1, [ref(151, 200, 3, 4), ref(201, 250, 5, 6)])])
    (window,) = timeline.windows
    assert window.base.id == folded.id and window.synthetic == (later,)  # type: ignore[attr-defined]
    assert (window.first_revision, window.last_revision) == (160, 250)
    assert window.first_time == at(3.2) and timeline.gaps == ()
    point = point_at_revision(timeline, 170)
    assert point.base.id == folded.id and point.base_revision == 160  # type: ignore[attr-defined]
    assert [s.first_revision for s in point.segments] == [151]
    assert point_at_revision(timeline, 240).base.id == later.id  # type: ignore[attr-defined]
    with pytest.raises(UsageError) as error:
        point_at_revision(timeline, 155)
    assert "before the oldest backup" in str(error.value) and "revision 160 (2026-12-01T03:00:03.200Z)" in str(error.value)


def test_without_its_label_a_synthetic_backup_is_placed_no_earlier_than_capture_saw_it() -> None:
    folded = synthetic("20261201T031500Z-ssssss", 160, 900, B1)
    timeline = build_timeline("prod", [folded], [chain(B1, [ref(151, 200, 3, 4)])])
    assert timeline.windows[0].first_time == at(4)  # the last time seen of the segment holding 160


def test_point_at_revision_takes_the_newest_base_of_every_window_covering_it() -> None:
    folded = synthetic("20261201T031500Z-ssssss", 350, 900, B1, seen="2026-12-01T03:00:08.000Z")
    first = chain(B1, [ref(101, 200, 1, 4), ref(201, 400, 5, 9)])
    second = chain(B2, [ref(301, 400, 601, 602)])
    timeline = build_timeline("prod", [B1, B2, folded], [first, second])
    point = point_at_revision(timeline, 380)
    assert point.base.id == folded.id and point.base_revision == 350  # type: ignore[attr-defined]
    assert point_at_revision(timeline, 320).base.id == B2.id


def test_a_named_base_is_kept_though_a_newer_one_covers_the_revision() -> None:
    folded = synthetic("20261201T031500Z-ssssss", 350, 900, B1, seen="2026-12-01T03:00:08.000Z")
    first = chain(B1, [ref(101, 200, 1, 4), ref(201, 400, 5, 9)])
    timeline = build_timeline("prod", [B1, B2, folded], [first, chain(B2, [ref(301, 400, 601, 602)])])
    point = point_at_revision(timeline, 380, B1.id)  # what a resumed restore fetched and replayed
    assert point.base.id == B1.id and point.base_revision == 100  # type: ignore[attr-defined]
    assert [s.first_revision for s in point.segments] == [101, 201]
    assert point_at_revision(timeline, 380, B2.id).base.id == B2.id
    with pytest.raises(UsageError, match="cannot be restored from base backup 20261201T031000Z-bbbbbb"):
        point_at_revision(timeline, 250, B2.id)  # after a base's window starts, never before
    with pytest.raises(UsageError, match="no longer a complete backup"):
        point_at_revision(build_timeline("prod", [B2], [chain(B2, [ref(301, 400, 601, 602)])]), 380, B1.id)


def test_a_point_knows_which_of_its_segments_other_segments_hold_again() -> None:
    """A pack beside the segments it packed (and a segment overlapping another's end): each is
    checked whole by the survey, so that damage is found while the others can be read."""
    pack, held, alone = ref(101, 150, 1, 2), [ref(101, 120, 1, 1), ref(121, 150, 1, 2)], ref(151, 160, 3, 3)
    overlapping = [ref(161, 170, 4, 4), ref(165, 180, 4, 5)]
    assert shared_revisions([alone]) == set() and shared_revisions([]) == set()
    assert shared_revisions([pack, *held, alone, *overlapping]) == {r.name for r in (pack, *held, *overlapping)}
    timeline = build_timeline("prod", [B1], [chain(B1, [pack, *held, alone, *overlapping])])
    point = point_at_revision(timeline, 175)
    assert point.segments == (pack, alone, *overlapping)
    assert point.doubled == {pack.name, *(r.name for r in overlapping)}
    assert point_at_revision(build_timeline("prod", [B1], [chain(B1, held)]), 125).doubled == frozenset()


def test_a_backup_whose_finish_was_written_to_the_second_is_not_given_to_a_time_within_that_second() -> None:
    """Manifests written before times had milliseconds: the backup finished somewhere in the
    second after the one written, and a time in that second restored its state (writes made
    after the time asked)."""
    old = B1.model_copy(update={"finished_at": "2026-12-01T03:00:00Z"})
    timeline = build_timeline("prod", [old], [chain(old, [ref(101, 150, 1.5, 2)])])
    assert timeline.windows[0].first_time == at(1)
    with pytest.raises(UsageError, match="before the oldest"):
        point_at_time(timeline, at(0.5), at(9999), lambda w, r: None)  # type: ignore[arg-type]
    assert point_at_time(timeline, at(1), at(9999), lambda w, r: None).revision == 100  # type: ignore[arg-type]
    now = B1.model_copy(update={"finished_at": "2026-12-01T03:00:00.000Z"})  # as lifeboat writes it now
    assert build_timeline("prod", [now], [chain(now, [ref(101, 150, 1.5, 2)])]).windows[0].first_time == at(0)


def test_segments_missing_before_a_synthetic_backup_do_not_lose_the_chain_after_it() -> None:
    """The window after the hole was dropped: a restore to any point after the synthetic
    backup was refused, and prune deleted every segment after it with the older base."""
    from lifeboat.catalog.timeline import SYNTHETIC_CHAIN, SYNTHETIC_SEEN

    synthetic = manifest("20261201T031000Z-5e5e5e", 185, 600).model_copy(
        update={"labels": {SYNTHETIC_CHAIN: B1.id, SYNTHETIC_SEEN: "2026-12-01T03:00:05.000Z"}})
    listing = chain(B1, [ref(101, 150, 1, 2), ref(171, 200, 4, 6)])  # 151..170 is missing
    timeline = build_timeline("prod", [B1, synthetic], [listing])
    assert [(w.base.id, w.first_revision, w.last_revision) for w in timeline.windows] == [
        (B1.id, 100, 150), (synthetic.id, 185, 200)]
    (gap,) = timeline.gaps
    assert (gap.after_revision, gap.before_revision) == (150, 185) and gap.missing and "151..170" in gap.reason
    point = point_at_revision(timeline, 195)
    assert point.base.id == synthetic.id and [s.first_revision for s in point.segments] == [171]
    with pytest.raises(UsageError, match="falls in a gap"):
        point_at_revision(timeline, 160)


def taken(backup_id: str, revision: int, started: float, finished: float, *, last_row: int | None = None,
          **changes: object) -> object:
    """A full backup of the state at ``revision`` (its snapshot's last row: ``last_row``, by
    default the same) that ran from ``started`` to ``finished`` seconds, as lifeboat writes them."""
    from lifeboat.catalog.timeline import STATE_REVISION

    def moment(seconds: float) -> str:
        return at(seconds).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    made = manifest(backup_id, last_row or revision, finished)
    return made.model_copy(update={"started_at": moment(started), "labels": {STATE_REVISION: str(revision)},
                                   **changes})


# B1's chain saw 101..150 between 1 and 2 s, 151..200 between 3 and 4 s, 201..260 between 10 and 12 s.
CAPTURING = [ref(101, 150, 1, 2), ref(151, 200, 3, 4), ref(201, 260, 10, 12)]


def test_a_backup_taken_while_the_chain_captured_is_a_later_start_of_its_window() -> None:
    scheduled = taken("20261201T030005Z-cccccc", 200, 4.5, 6)  # etcd idle at 200 from 4 s to 10 s
    timeline = build_timeline("prod", [B1, scheduled], [chain(B1, CAPTURING)])
    (window,) = timeline.windows  # not a window of its own beside the chain's
    assert window.passing == (scheduled,) and window.synthetic == ()
    assert [(b.manifest.id, b.revision) for b in window.bases()] == [(B1.id, 100), (scheduled.id, 200)]
    point = point_at_revision(timeline, 230)
    assert point.base.id == scheduled.id and point.base_revision == 200  # type: ignore[attr-defined]
    assert [s.first_revision for s in point.segments] == [201]
    assert point_at_revision(timeline, 180).base.id == B1.id  # before it, the chain's base
    named = point_at_revision(timeline, 230, scheduled.id)  # a resumed restore's base
    assert named.base.id == scheduled.id and named.segments == point.segments
    assert point_at_revision(timeline, 200).segments == ()


@pytest.mark.parametrize("why, backup", [
    ("another etcd cluster", taken("20261201T030005Z-cccccc", 200, 4.5, 6).model_copy(
        update={"source": B1.source.model_copy(update={"cluster_id": "c2"})})),
    # A cluster restored from an older backup goes through revisions the chain saw, with other
    # contents, after the chain saw them.
    ("started after the chain saw the next revision", taken("20261201T030100Z-cccccc", 200, 60, 61)),
    ("finished before the chain saw its revision", taken("20261201T025900Z-cccccc", 250, -60, -59)),
    ("encrypted where the chain's base is not", taken("20261201T030005Z-cccccc", 200, 4.5, 6).model_copy(
        update={"encryption": "age", "recipients": ("age1x",)})),
    ("after everything the chain captured", taken("20261201T030015Z-cccccc", 261, 13, 14)),
    ("at the chain's own base revision", taken("20261201T030000Z-cccccc", 100, 0, 0.5)),
    # Written before backups recorded the revision their state is at: it may be above the last row.
    ("without the revision its state is at", taken("20261201T030005Z-cccccc", 200, 4.5, 6).model_copy(
        update={"labels": {}})),
])
def test_a_backup_not_shown_to_hold_the_chains_state_is_not_a_start_of_its_window(why: str, backup: object) -> None:
    timeline = build_timeline("prod", [B1, backup], [chain(B1, CAPTURING)])  # type: ignore[list-item]
    assert [w.base.id for w in timeline.windows if w.chain is not None] == [B1.id], why
    assert all(w.passing == () for w in timeline.windows), why
    assert backup.id in [w.base.id for w in timeline.windows], why  # type: ignore[attr-defined]
    assert point_at_revision(timeline, 255).base.id == B1.id, why


@pytest.mark.parametrize("backup, words", [
    (taken("20261201T030100Z-cccccc", 200, 60, 61), ["started at 2026-12-01T03:01:00.000Z", "48 s after capture saw "
                                                    "the revision after 200"]),
    (taken("20261201T025900Z-cccccc", 250, -60, -59), ["finished at 2026-12-01T02:59:01.000Z", "69 s before capture "
                                                      "saw revision 250"]),
])
def test_a_backup_whose_times_do_not_fit_captures_is_said_and_no_other_is(backup: object, words: list[str]) -> None:
    scheduled = taken("20261201T030005Z-dddddd", 150, 2.5, 3)  # a later base: not said
    other = taken("20261201T030005Z-eeeeee", 200, 4.5, 6).model_copy(  # not of this etcd cluster: not said
        update={"source": B1.source.model_copy(update={"cluster_id": "c2"})})
    timeline = build_timeline("prod", [B1, backup, scheduled, other], [chain(B1, CAPTURING)])  # type: ignore[list-item]
    (unplaced,) = timeline.unplaced
    assert (unplaced.backup, unplaced.chain) == (backup.id, B1.id)  # type: ignore[attr-defined]
    assert all(w in unplaced.reason for w in words), unplaced.reason
    assert "not a base of capture chain" in unplaced.text() and "clock" in unplaced.text()


def test_a_backup_written_from_the_chain_is_a_synthetic_base_not_a_passing_one() -> None:
    folded = synthetic("20261201T030005Z-ssssss", 200, 6, B1, seen="2026-12-01T03:00:04.000Z")
    (window,) = build_timeline("prod", [B1, folded], [chain(B1, CAPTURING)]).windows
    assert window.synthetic == (folded,) and window.passing == ()


def test_a_backup_whose_state_is_above_its_last_row_starts_the_replay_after_its_state() -> None:
    """etcd compacted away tombstones after the last row: the events up to the compaction are
    in the backup's state already (keys they deleted are gone from it)."""
    scheduled = taken("20261201T030005Z-cccccc", 210, 10.5, 11, last_row=195)
    timeline = build_timeline("prod", [B1, scheduled], [chain(B1, CAPTURING)])
    assert [(b.manifest.id, b.revision) for b in timeline.windows[0].bases()] == [(B1.id, 100), (scheduled.id, 210)]
    point = point_at_revision(timeline, 230)
    assert point.base.id == scheduled.id and point.base_revision == 210  # type: ignore[attr-defined]
    assert point_at_revision(timeline, 205).base.id == B1.id  # between its last row and its state: not from it


def test_the_segments_holding_a_revision_include_a_pack_that_starts_long_before_it() -> None:
    from lifeboat.catalog.timeline import SegmentsAt
    pack = ref(101, 400, 1, 9)  # beside the segments it holds
    at = SegmentsAt([ref(101, 150, 1, 2), pack, ref(151, 200, 3, 4), ref(201, 400, 5, 9), ref(401, 410, 10, 11)])
    assert [(s.first_revision, s.last_revision) for s in at.holding(300)] == [(101, 400), (201, 400)]
    assert [(s.first_revision, s.last_revision) for s in at.holding(401)] == [(401, 410)]
    assert at.holding(411) == [] and at.holding(100) == [] and at.last_revision == 410

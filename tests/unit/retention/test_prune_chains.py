"""Retention keeps what capture chains need: a chain goes with its bases, a recovery window
keeps the base of every chain that reaches into it, and a synthetic backup folds what is
before it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lifeboat.capture.resume import decide_resume
from lifeboat.catalog.chains import ChainInfo, ChainStore
from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.pins import Pin
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.segments import Predecessor, seen_text
from lifeboat.catalog.timeline import SYNTHETIC_CHAIN, SYNTHETIC_SEEN, build_timeline, point_at_revision
from lifeboat.errors import UsageError
from lifeboat.retention import parse_policies
from lifeboat.retention.plan import Verdict
from lifeboat.retention.prune import apply_prune, plan_prune
from lifeboat.store.memory import MemoryStore
from tests.unit.catalog.capture_records import at, manifest, put, segment

DAY = 86400.0
NOW = at(40 * DAY)


def committed(repo: BackupRepository, m: Manifest) -> None:
    """Data first, then the manifest, as a backup writes them."""
    for obj in m.objects:
        repo.write_object(m.cluster, m.id, obj.name, [b"x" * obj.size])
    repo.commit(m)


def repo_with_chains() -> BackupRepository:
    repo = BackupRepository.open(MemoryStore(), create=True)
    oldest = manifest("20261101T000000Z-aaaaaa", 100, 0)  # its chain ended 30 days ago
    old = manifest("20261111T000000Z-bbbbbb", 200, 10 * DAY)  # its chain still runs
    middle = manifest("20261121T000000Z-cccccc", 300, 20 * DAY)  # a plain scheduled backup
    chains = ChainStore(repo.store)
    for m, last_seen in ((oldest, 10 * DAY), (old, NOW.timestamp() - at(0).timestamp() - 3600)):
        committed(repo, m)
        chains.start(ChainInfo(m.id, "prod", m.id, m.snapshot.revision, "c1", m.finished_at))
        base = m.snapshot.revision
        s = segment(Predecessor("base", base, m.id), (base + 1, last_seen, [put(b"/k", b"v", base + 1, base + 1, 1)]))
        chains.commit_segment(replace(s, chain=m.id), (), 1)
    committed(repo, middle)
    return repo


def test_recovery_window_keeps_the_base_of_a_chain_reaching_into_it_and_its_segments() -> None:
    repo = repo_with_chains()
    plan = plan_prune(repo, parse_policies({"recovery-window": "7d"}), NOW)
    verdicts = {d.backup.id: d for d in plan.retention.decisions}
    assert verdicts["20261111T000000Z-bbbbbb"].verdict is Verdict.KEEP
    assert "reaches into the recovery window" in verdicts["20261111T000000Z-bbbbbb"].reasons[0]
    assert verdicts["20261101T000000Z-aaaaaa"].verdict is Verdict.DELETE
    removed = {c.listing.info.chain: c.remove for c in plan.chains}
    assert removed == {"20261101T000000Z-aaaaaa": True, "20261111T000000Z-bbbbbb": False}


def test_the_newest_base_of_a_chain_capture_may_still_be_writing_is_kept_whatever_the_policies() -> None:
    """`keep-last 1` deleted the base of the chain capture was appending to, and the chain with
    it: capture went on writing segments with no chain record and no base, restorable by nothing."""
    repo = repo_with_chains()
    plan = plan_prune(repo, parse_policies({"keep-last": 1}), NOW)
    verdicts = {d.backup.id: d for d in plan.retention.decisions}
    running = verdicts["20261111T000000Z-bbbbbb"]
    assert running.verdict is Verdict.KEEP and "which capture may still be writing" in running.reasons[0]
    assert verdicts["20261101T000000Z-aaaaaa"].verdict is Verdict.DELETE  # its chain was last written 30 days ago
    result = apply_prune(repo, plan)
    assert result.chains_removed == ["20261101T000000Z-aaaaaa"]
    assert [c.info.chain for c in ChainStore(repo.store).chains("prod")] == ["20261111T000000Z-bbbbbb"]
    # Written longer ago than the orphan grace, it is judged as any other chain.
    later = plan_prune(repo, parse_policies({"keep-last": 1}), at(40 * DAY + 2 * DAY))
    assert {d.backup.id: d.verdict for d in later.retention.decisions}["20261111T000000Z-bbbbbb"] is Verdict.DELETE


def test_prune_deletes_a_chain_with_its_base_and_keeps_the_others_whole() -> None:
    repo = repo_with_chains()
    result = apply_prune(repo, plan_prune(repo, parse_policies({"recovery-window": "7d"}), NOW))
    assert result.chains_removed == ["20261101T000000Z-aaaaaa"]
    assert [c.info.chain for c in ChainStore(repo.store).chains("prod")] == ["20261111T000000Z-bbbbbb"]
    assert len(ChainStore(repo.store).chains("prod")[0].segments) == 1


# A chain folded by synthetic backups: base B at day 0, one segment a day, synthetic backups
# of revisions the chain holds.
B = manifest("20261101T000000Z-aaaaaa", 100, 0)


def synthetic_of(backup_id: str, revision: int, seen_day: float, taken_day: float) -> Manifest:
    labels = {SYNTHETIC_CHAIN: B.id, SYNTHETIC_SEEN: seen_text(at(seen_day * DAY))}
    return manifest(backup_id, revision, taken_day * DAY).model_copy(update={"labels": labels})


S1 = synthetic_of("20261112T000000Z-5e5e5e", 1150, 10.5, 12)  # inside segment 1101..1200
S2 = synthetic_of("20261206T000000Z-eeeeee", 3600, 35.5, 36)


def folded_repo(*synthetic: Manifest, days: int = 39) -> BackupRepository:
    repo = BackupRepository.open(MemoryStore(), create=True)
    committed(repo, B)
    chains = ChainStore(repo.store)
    chains.start(ChainInfo(B.id, "prod", B.id, 100, "c1", B.finished_at))
    previous = Predecessor("base", 100, B.id)
    for day in range(days):  # segment d holds revisions 100d+101..100d+200, seen during day d
        first = 100 * day + 101
        s = replace(segment(previous, (first, day * DAY + 1, [put(b"/k", b"v", 101, first, day + 1)]),
                            (first + 99, day * DAY + DAY - 1, [put(b"/k", b"w", 101, first + 99, day + 2)])),
                    chain=B.id)
        ref = chains.commit_segment(s, (), 1)
        previous = Predecessor("segment", ref.last_revision, ref.name)
    for m in synthetic:
        committed(repo, m)
    return repo


def segments_of(repo: BackupRepository) -> list[int]:
    (listing,) = ChainStore(repo.store).chains("prod")
    return [s.first_revision for s in listing.segments]


def test_a_synthetic_backup_lets_the_old_base_and_the_segments_it_folded_go() -> None:
    repo = folded_repo(S1)
    plan = plan_prune(repo, parse_policies({"keep-last": 1}), NOW)
    verdicts = {d.backup.id: d.verdict for d in plan.retention.decisions}
    assert verdicts == {B.id: Verdict.DELETE, S1.id: Verdict.KEEP}
    (chain,) = plan.chains
    assert chain.verdict == "fold" and chain.folded_bases == (B.id,)
    assert [s.last_revision for s in chain.folded] == [200 + 100 * d for d in range(10)]  # all ending <= 1150
    result = apply_prune(repo, plan)
    assert result.deleted == [B.id] and result.segments_removed == 10 and result.chains_removed == []
    assert segments_of(repo)[0] == 1101  # the segment holding 1150 stays: it holds 1151..
    timeline = build_timeline("prod", list(repo.manifests("prod")), ChainStore(repo.store).chains("prod"))
    (window,) = timeline.windows
    assert (window.base.id, window.first_revision, window.last_revision) == (S1.id, 1150, 4000)
    assert window.first_time == at(10.5 * DAY) and timeline.gaps == ()
    point = point_at_revision(timeline, 2000)
    assert point.base.id == S1.id and point.segments[0].first_revision == 1101
    with pytest.raises(UsageError, match="before the oldest backup; the oldest restorable point is revision 1150"):
        point_at_revision(timeline, 500)


def test_a_backup_taken_while_capture_ran_folds_the_chain_but_keeps_the_segment_that_dates_it() -> None:
    from lifeboat.catalog.timeline import STATE_REVISION
    # At the end of segment 10 (1101..1200, seen during day 10), taken before 1201 was seen (day 11).
    scheduled = manifest("20261112T000000Z-7a7a7a", 1200, 11 * DAY).model_copy(
        update={"labels": {STATE_REVISION: "1200"}})
    repo = folded_repo(scheduled)
    plan = plan_prune(repo, parse_policies({"keep-last": 1}), NOW)
    assert {d.backup.id: d.verdict for d in plan.retention.decisions} == {B.id: Verdict.DELETE,
                                                                          scheduled.id: Verdict.KEEP}
    (chain,) = plan.chains
    assert chain.verdict == "fold" and chain.folded_bases == (B.id,)
    assert f"folded into backup {scheduled.id} (revision 1200)" in chain.reason
    # Segments ending before 1200: the one ending at it stays (a synthetic backup would let it go).
    assert [s.last_revision for s in chain.folded] == [200 + 100 * d for d in range(10)]
    apply_prune(repo, plan)
    assert segments_of(repo)[0] == 1101
    timeline = build_timeline("prod", list(repo.manifests("prod")), ChainStore(repo.store).chains("prod"))
    (window,) = timeline.windows  # the backup is still found to be the chain's, and starts it
    assert (window.base.id, window.first_revision, window.last_revision) == (scheduled.id, 1200, 4000)
    assert window.first_time == at(11 * DAY - 1) and timeline.gaps == ()
    point = point_at_revision(timeline, 2000)
    assert point.base.id == scheduled.id and point.segments[0].first_revision == 1201
    # A second prune finds nothing more to fold.
    (again,) = plan_prune(repo, parse_policies({"keep-last": 1}), NOW).chains
    assert again.verdict == "keep"


def test_recovery_window_keeps_the_newest_base_seen_before_it_starts_and_folds_the_rest() -> None:
    repo = folded_repo(S1, S2)
    plain = manifest("20261201T000000Z-dddddd", 3000, 30 * DAY)  # the policy's "newest before the window"
    committed(repo, plain)
    plan = plan_prune(repo, parse_policies({"recovery-window": "7d"}), NOW)  # starts at day 33
    decisions = {d.backup.id: d for d in plan.retention.decisions}
    assert decisions[B.id].verdict is Verdict.DELETE
    assert decisions[S1.id].verdict is Verdict.KEEP
    assert "seen before the recovery window starts" in decisions[S1.id].reasons[0]
    assert decisions[S2.id].verdict is Verdict.KEEP  # seen within the window: the policy keeps it
    (chain,) = plan.chains
    assert chain.folded_bases == (B.id,) and max(s.last_revision for s in chain.folded) == 1100


def test_a_synthetic_backup_counts_as_taken_when_capture_saw_its_revision() -> None:
    written_late = synthetic_of("20261208T000000Z-111111", 1150, 10.5, 38)  # state of day 10, written day 38
    repo = folded_repo(written_late)
    plan = plan_prune(repo, parse_policies({"recovery-window": "7d"}), NOW)
    decisions = {d.backup.id: d for d in plan.retention.decisions}
    assert decisions[written_late.id].backup.taken_at == at(10.5 * DAY)
    assert decisions[B.id].verdict is Verdict.DELETE and plan.chains[0].verdict == "fold"


def test_recovery_window_reaching_before_every_synthetic_backup_keeps_the_chain_whole() -> None:
    repo = folded_repo(S1, S2)
    committed(repo, manifest("20261104T000000Z-dddddd", 350, 3 * DAY))
    plan = plan_prune(repo, parse_policies({"recovery-window": "35d"}), NOW)  # starts at day 5
    decisions = {d.backup.id: d for d in plan.retention.decisions}
    assert decisions[B.id].verdict is Verdict.KEEP
    assert "newest base of capture chain" in decisions[B.id].reasons[0]  # not the plain backup of day 3
    (chain,) = plan.chains
    assert chain.verdict == "keep" and chain.folded == ()


def test_a_retained_older_base_keeps_every_segment_after_it() -> None:
    repo = folded_repo(S1)
    repo.pin(B, Pin("2026-11-30T00:00:00+00:00", "ops@node", "audit"))
    plan = plan_prune(repo, parse_policies({"keep-last": 1}), NOW)
    (chain,) = plan.chains
    assert chain.verdict == "keep"
    apply_prune(repo, plan)
    assert len(segments_of(repo)) == 39


def test_a_base_pinned_after_planning_keeps_the_segments_it_needs() -> None:
    repo = folded_repo(S1)
    plan = plan_prune(repo, parse_policies({"keep-last": 1}), NOW)
    repo.pin(B, Pin("2026-11-30T00:00:00+00:00", "ops@node", "audit"))
    result = apply_prune(repo, plan)
    assert result.skipped == [B.id] and result.segments_removed == 0 and len(segments_of(repo)) == 39


def test_an_interrupted_fold_is_finished_by_the_next_prune() -> None:
    repo = folded_repo(S1)
    repo.delete(B)  # the prune stopped after deleting the old base, before its segments
    timeline = build_timeline("prod", list(repo.manifests("prod")), ChainStore(repo.store).chains("prod"))
    assert timeline.windows[0].base.id == S1.id and timeline.windows[0].first_revision == 1150
    result = apply_prune(repo, plan_prune(repo, parse_policies({"keep-last": 1}), NOW))
    assert result.segments_removed == 10 and segments_of(repo)[0] == 1101


def test_the_chains_newest_segment_stays_so_capture_resumes_after_it() -> None:
    end = synthetic_of("20261206T000000Z-ffffff", 4000, 38.9, 39)
    repo = folded_repo(end)
    apply_prune(repo, plan_prune(repo, parse_policies({"keep-last": 1}), NOW))
    assert segments_of(repo) == [3901]
    resume = decide_resume("prod", list(repo.manifests("prod")), ChainStore(repo.store).chains("prod"), "c1")
    assert resume.info is not None and resume.previous is not None
    assert resume.previous.kind == "segment" and resume.previous.last_revision == 4000


def test_a_chain_goes_whole_once_none_of_its_bases_is_kept() -> None:
    repo = folded_repo(S1)
    newer = manifest("20261209T000000Z-222222", 5000, 39 * DAY)
    committed(repo, newer)
    plan = plan_prune(repo, parse_policies({"keep-last": 1}), NOW)
    (chain,) = plan.chains
    assert chain.verdict == "delete" and set(chain.bases) == {B.id, S1.id}
    result = apply_prune(repo, plan)
    assert result.chains_removed == [B.id] and ChainStore(repo.store).chains("prod") == []


def test_a_chain_whose_base_has_a_damaged_manifest_is_neither_folded_nor_deleted() -> None:
    """The timeline cannot see a base whose manifest is damaged: prune folded its chain into a
    later synthetic backup (the revisions between them went) although the policy kept the base,
    and once a fold's synthetic base was damaged it deleted the whole chain as baseless."""
    repo = folded_repo(S1)
    repo.store.put_bytes(repo.manifest_key(B), b'{"id": "half a manif')
    (chain,) = plan_prune(repo, parse_policies({"keep-last": 2}), NOW).chains
    assert chain.verdict == "keep" and B.id in chain.reason and "damaged or missing" in chain.reason
    result = apply_prune(repo, plan_prune(repo, parse_policies({"keep-last": 1}), NOW))
    assert result.segments_removed == 0 and len(segments_of(repo)) == 39

    folded = folded_repo(S1)
    apply_prune(folded, plan_prune(folded, parse_policies({"keep-last": 1}), NOW))  # B goes, the chain folds
    folded.store.put_bytes(folded.manifest_key(S1), b"not json")
    for cluster in ("prod", None):
        (chain,) = plan_prune(folded, parse_policies({"keep-last": 1}), NOW, cluster=cluster).chains
        assert chain.verdict == "keep" and S1.id in chain.reason
    assert apply_prune(folded, plan_prune(folded, parse_policies({"keep-last": 1}), NOW,
                                          cluster="prod")).chains_removed == []


def test_segments_missing_before_a_kept_synthetic_backup_do_not_delete_the_chain_after_it() -> None:
    """prune said "every base backup of it is deleted" of a chain whose synthetic backup it kept,
    and deleted every segment after it."""
    repo = folded_repo(S2)
    (listing,) = ChainStore(repo.store).chains("prod")
    hole = next(s for s in listing.segments if s.first_revision == 1101)  # before S2 (3600)
    ChainStore(repo.store).delete_segments("prod", B.id, [hole])
    plan = plan_prune(repo, parse_policies({"keep-last": 1}), NOW)
    assert {d.backup.id: d.verdict for d in plan.retention.decisions} == {B.id: Verdict.DELETE, S2.id: Verdict.KEEP}
    (chain,) = plan.chains
    assert chain.verdict == "fold" and S2.id in chain.reason
    apply_prune(repo, plan)
    timeline = build_timeline("prod", list(repo.manifests("prod")), ChainStore(repo.store).chains("prod"))
    assert point_at_revision(timeline, 3800).base.id == S2.id
    assert segments_of(repo)[0] == 3601 and segments_of(repo)[-1] == 3901  # what is after S2 stays


def test_pruning_a_cluster_that_holds_a_copy_of_another_clusters_chain_leaves_that_cluster_alone() -> None:
    """A copy of prod's chain folders under staging (a bucket folder copied to rename a cluster)
    has records naming prod's chains: `prune --cluster staging` (and staging's agent) judged them
    without prod's backups, as chains whose base is gone, and deleted prod's chains, the one
    capture was writing too, by the names the records give."""
    repo = repo_with_chains()
    prod = sorted(o.key for o in repo.store.list("clusters/prod/"))
    for key in [k for k in prod if "/chains/" in k]:
        repo.store.put_bytes("clusters/staging/" + key.removeprefix("clusters/prod/"), repo.store.get_bytes(key))
    plan = plan_prune(repo, parse_policies({"keep-last": 1}), at(42 * DAY), cluster="staging")
    assert plan.chains == ()
    apply_prune(repo, plan)
    assert sorted(o.key for o in repo.store.list("clusters/prod/")) == prod

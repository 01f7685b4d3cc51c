"""Pruning: apply the retention plan to a repository and clean up uncommitted leftovers.

:func:`plan_prune` reads the catalog and asks :func:`lifeboat.retention.evaluate` for a
verdict on every backup; :func:`apply_prune` executes that same plan object. Deleting a
backup goes through :meth:`BackupRepository.delete` (data first, manifest last), so an
interrupted prune leaves every touched backup with its manifest and the same verdict: the
next prune finishes the job. Orphans (objects of a backup id without a manifest) are
removed once older than ``orphan_grace``; younger ones may be a backup still uploading. So are
incomplete uploads not written to for longer than ``orphan_grace``: the hidden temp files a
killed backup leaves in a local repository, and the multipart uploads it leaves pending in S3
(aborted, which frees their parts).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.pins import DeletionClaim
from lifeboat.catalog.timeline import SYNTHETIC_SEEN, build_timeline, seen_time
from lifeboat.catalog.orphans import Orphan, find_orphans
from lifeboat.catalog.repository import BackupRepository
from lifeboat.config import check_orphan_grace
from lifeboat.errors import IntegrityError, Unsupported, UsageError
from lifeboat.store.base import IncompleteUpload
from lifeboat.retention.evaluate import evaluate
from lifeboat.retention.chains import ChainDecision, judge_chains, keep_open_chain_bases, keep_window_bases
from lifeboat.retention.plan import BackupDecision, RetentionPlan, Verdict
from lifeboat.retention.policies import Policy
from lifeboat.retention.records import DAMAGED, BackupRecord

_log = logging.getLogger(__name__)

ORPHAN_GRACE = timedelta(hours=24)
"""Longer than any backup upload takes, so a running backup's objects are never orphans."""

CLAIM_STALE = timedelta(minutes=15)
"""Far longer than deleting one backup's few objects takes: a prune's deletion claim this old
was left by a prune that was interrupted, and the next prune takes the deletion over."""


@dataclass(frozen=True)
class LeftoverDecision:
    """Whether prune removes one leftover (an orphan backup, an incomplete upload), and why."""

    remove: bool
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {**self.subject(), "verdict": "delete" if self.remove else "keep", "reasons": [self.reason]}

    def subject(self) -> dict[str, object]:
        """What the leftover is, for --output json."""
        raise NotImplementedError


@dataclass(frozen=True)
class OrphanDecision(LeftoverDecision):
    orphan: Orphan

    def subject(self) -> dict[str, object]:
        return {"id": self.orphan.backup_id, "cluster": self.orphan.cluster,
                "objects": len(self.orphan.keys), "size": self.orphan.size}


@dataclass(frozen=True)
class IncompleteDecision(LeftoverDecision):
    upload: IncompleteUpload

    def subject(self) -> dict[str, object]:
        kind = {"kind": "multipart upload", "upload_id": self.upload.upload_id} if self.upload.upload_id else {
            "kind": "temp file"}
        return {"key": self.upload.name, **kind, "size": self.upload.size,
                "modified": self.upload.modified.isoformat(timespec="seconds")}


@dataclass(frozen=True)
class PrunePlan:
    """What a prune will do: the retention plan, and the fate of every orphan and chain."""

    retention: RetentionPlan
    manifests: dict[tuple[str, str], Manifest]
    orphans: tuple[OrphanDecision, ...]
    chains: tuple[ChainDecision, ...] = ()
    incomplete: tuple[IncompleteDecision, ...] = ()
    incomplete_unlisted: str = ""  # why the store could not list its incomplete uploads, if it could not

    def manifest_of(self, decision: BackupDecision) -> Manifest:
        return self.manifests[(decision.backup.cluster, decision.backup.id)]

    @property
    def incomplete_listed(self) -> bool:
        return not self.incomplete_unlisted

    @property
    def deletions(self) -> tuple[BackupDecision, ...]:
        return tuple(d for d in self.retention.decisions if d.verdict is Verdict.DELETE)

    @property
    def orphans_to_remove(self) -> tuple[Orphan, ...]:
        return tuple(o.orphan for o in self.orphans if o.remove)


@dataclass
class PruneResult:
    deleted: list[str]
    skipped: list[str]  # planned for deletion but pinned since the plan was made
    orphans_removed: list[str]
    bytes_freed: int = 0
    chains_removed: list[str] = field(default_factory=list)
    segments_removed: int = 0  # of chains folded into a synthetic backup
    incomplete_removed: list[str] = field(default_factory=list)
    uploads_aborted: int = 0  # of incomplete_removed, the S3 multipart uploads


def plan_prune(
    repo: BackupRepository,
    policies: Sequence[Policy],
    now: datetime,
    *,
    cluster: str | None = None,
    min_redundancy: int = 1,
    orphan_grace: timedelta = ORPHAN_GRACE,
) -> PrunePlan:
    """Decide, without changing anything, what pruning ``cluster`` (or all clusters) does.

    An ``orphan_grace`` below the safe minimum is a UsageError (see config.check_orphan_grace).
    """
    try:
        check_orphan_grace(orphan_grace.total_seconds())
    except ValueError as exc:
        raise UsageError(f"orphan grace {exc}") from None
    scanned = repo.scan(cluster)  # its pins too: no second listing for them
    manifests = {(m.cluster, m.id): m for m in scanned.backups}
    records = [_record(m, (m.cluster, m.id) in scanned.pins) for m in manifests.values()]
    retention = _evaluate_restorable(repo, policies, records, now, min_redundancy)
    clusters = [cluster] if cluster else sorted({c for c, _ in manifests} | {d.cluster for d in scanned.damaged})
    store = repo.chain_store
    chains = [listing for c in clusters for listing in store.chains(c)]
    timelines = [build_timeline(c, [m for m in manifests.values() if m.cluster == c],
                                [listing for listing in chains if listing.info.cluster == c]) for c in clusters]
    for unplaced in (u for t in timelines for u in t.unplaced):
        _log.warning("%s", unplaced.text())
    retention = keep_open_chain_bases(keep_window_bases(retention, policies, timelines, now), timelines, now,
                                      orphan_grace)
    found_orphans = find_orphans(repo, cluster)
    orphans = tuple(_judge_orphan(o, now, orphan_grace) for o in found_orphans)
    unreadable = frozenset({(d.cluster, d.id) for d in scanned.damaged}
                           | {(o.cluster, o.backup_id) for o in found_orphans if not o.pin_only})
    try:
        uploads, unlisted = repo.incomplete_uploads(), ""
    except Unsupported as exc:
        uploads, unlisted = [], str(exc)  # the rest of the prune is still worth doing
    incomplete = tuple(_judge_incomplete(u, now, orphan_grace) for u in uploads)
    return PrunePlan(retention, manifests, orphans,
                     judge_chains(retention, chains, timelines, now, orphan_grace, unreadable), incomplete, unlisted)


# The kept backups' manifests and objects are read this many at a time: each is a round trip,
# and a prune that keeps thousands (recovery-window 30d of half-hourly backups) waited for each.
CHECK_THREADS = 16


def _evaluate_restorable(repo: BackupRepository, policies: Sequence[Policy], records: list[BackupRecord], now: datetime,
                         min_redundancy: int) -> RetentionPlan:
    """The policies' plan, in which every backup kept as complete still has every object it
    lists (one HEAD each, as ``list --check``): one that lost an object counts as damaged, not
    as one of the backups the policies keep, so older restorable ones are kept in its place
    instead of deleted. Its manifest is read again, past the local cache (a manifest damaged in
    place may keep the size and time the cache knows it by). Only the kept are checked: a few per
    policy, not the whole repository; ``CHECK_THREADS`` at a time."""
    checked: set[tuple[str, str]] = set()
    with ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="prune-check") as pool:
        while True:
            retention = evaluate(policies, records, now, min_redundancy=min_redundancy)
            due = [(b.cluster, b.id) for b in retention.to_keep if b.is_complete and (b.cluster, b.id) not in checked]
            checked.update(due)
            damaged: set[tuple[str, str]] = set()
            for (cluster, backup_id), problems in zip(due, pool.map(lambda key: _unrestorable(repo, *key), due)):
                if problems:
                    _log.warning("backup %s/%s is not counted as kept by the retention policies: %s",
                                 cluster, backup_id, "; ".join(problems))
                    damaged.add((cluster, backup_id))
            if not damaged:
                return retention
            records = [replace(r, status=DAMAGED) if (r.cluster, r.id) in damaged else r for r in records]


def _unrestorable(repo: BackupRepository, cluster: str, backup_id: str) -> list[str]:
    """Why the backup can no longer be restored, read afresh from the store: nothing when it can."""
    fresh = repo.read_manifest(cluster, backup_id)
    if isinstance(fresh, Manifest):
        return repo.missing_objects(fresh)
    return [f"its manifest no longer reads: {fresh.reason}" if fresh is not None else "its manifest is gone"]


def apply_prune(
    repo: BackupRepository,
    plan: PrunePlan,
    *,
    on_step: Callable[[str, str], None] = lambda what, backup_id: None,
) -> PruneResult:
    """Carry out ``plan``; ``on_step(what, id)`` is told of each deletion as it finishes.

    Each backup is claimed for deletion first (see :mod:`lifeboat.catalog.pins`): one pinned
    after the plan was made survives, one another prune deletes is left to it and reported by
    that one only. A failure stops the prune; running it again completes it.
    """
    result = PruneResult([], [], [])
    store = repo.chain_store
    for chain in plan.chains:
        # A chain goes before its bases: a base without its chain is still a good backup.
        if chain.remove and not _pinned_since(repo, plan, chain):
            store.delete_chain(chain.listing.info.cluster, chain.listing.info.chain)
            result.chains_removed.append(chain.listing.info.chain)
            result.bytes_freed += sum(s.size for s in chain.listing.segments)
            on_step("deleted capture chain", chain.listing.info.chain)
    claim = DeletionClaim.now(clock=repo.clock)
    for decision in plan.deletions:
        manifest = plan.manifest_of(decision)
        why_not = repo.claim_deletion(manifest, claim, stale_after=CLAIM_STALE)
        if why_not is not None:
            result.skipped.append(manifest.id)
            on_step(f"skipped ({why_not})", manifest.id)
            continue
        repo.delete(manifest)
        result.deleted.append(manifest.id)
        result.bytes_freed += manifest.stored_size
        on_step("deleted", manifest.id)
    for chain in plan.chains:
        # Folded segments go after the older bases: until then those bases still replay them,
        # and an interrupted prune leaves a window that starts at the synthetic backup.
        if chain.folded and all(b in result.deleted for b in chain.folded_bases):
            store.delete_segments(chain.listing.info.cluster, chain.listing.info.chain, chain.folded)
            result.segments_removed += len(chain.folded)
            result.bytes_freed += sum(s.size for s in chain.folded)
            on_step(f"folded capture chain ({len(chain.folded)} segments deleted)", chain.listing.info.chain)
    for orphan in plan.orphans_to_remove:
        repo.discard_objects(orphan.cluster, orphan.backup_id)
        result.orphans_removed.append(orphan.backup_id)
        result.bytes_freed += orphan.size
        on_step("removed orphan", orphan.backup_id)
    for judged in plan.incomplete:
        if judged.remove:
            repo.remove_incomplete(judged.upload)
            result.incomplete_removed.append(judged.upload.name)
            result.uploads_aborted += bool(judged.upload.upload_id)
            result.bytes_freed += judged.upload.size
            on_step("aborted multipart upload" if judged.upload.upload_id else "removed incomplete upload",
                    judged.upload.name)
    return result


def _pinned_since(repo: BackupRepository, plan: PrunePlan, chain: ChainDecision) -> bool:
    """A base of the chain was pinned after the plan was made: the chain stays with it."""
    cluster = chain.listing.info.cluster
    bases = [plan.manifests.get((cluster, b)) for b in chain.bases]
    return any(m is not None and repo.pin_of(m) is not None for m in bases)


def _record(manifest: Manifest, pinned: bool) -> BackupRecord:
    try:
        taken_at = datetime.fromisoformat(manifest.started_at)
    except ValueError:
        raise IntegrityError(
            f"backup {manifest.cluster}/{manifest.id} has an unreadable started_at "
            f"{manifest.started_at!r}; refusing to prune from it"
        ) from None
    if SYNTHETIC_SEEN in manifest.labels:
        # A synthetic backup holds the cluster as capture saw it then, not when it was written.
        taken_at = seen_time(manifest, ())
    return BackupRecord(manifest.id, manifest.cluster, taken_at, manifest.status,
                        pinned=pinned, size=manifest.stored_size)


def _judge_orphan(orphan: Orphan, now: datetime, grace: timedelta) -> OrphanDecision:
    # Its newest object's time, not the backup's start: a long upload finishes long after the
    # start its id records, and the manifest follows the last object.
    if orphan.pin_only:
        return OrphanDecision(True, "no manifest, only its pin or a prune's deletion claim: left by a delete "
                              "interrupted after the manifest", orphan=orphan)
    age = now - orphan.last_written
    hours = f"{grace.total_seconds() / 3600:g}h"
    if age < grace:
        return OrphanDecision(False, f"no manifest, last written less than {hours} ago: "
                              "may still be uploading", orphan=orphan)
    return OrphanDecision(True, f"no manifest, last written more than {hours} ago: "
                          "left by an interrupted backup", orphan=orphan)


def _judge_incomplete(upload: IncompleteUpload, now: datetime, grace: timedelta) -> IncompleteDecision:
    hours = f"{grace.total_seconds() / 3600:g}h"
    if now - upload.modified < grace:
        return IncompleteDecision(False, f"incomplete upload written to less than {hours} ago: "
                                  "may still be running", upload=upload)
    return IncompleteDecision(True, f"incomplete upload not written to for {hours}: its writer died",
                              upload=upload)

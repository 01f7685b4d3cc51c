"""Retention of capture chains: which bases a recovery window needs, which segments can go.

Pure functions of the retention plan, the chains a listing found and the cluster's timeline.
A chain's window has one or more bases (:meth:`lifeboat.catalog.timeline.Window.bases`): its
own base backup, the synthetic full backups written from it and the full backups taken while
it captured. The rules:

* ``recovery-window D`` keeps, in every chain reaching into the last ``D``, the newest base
  seen at or before the window's start (or the chain's oldest base when all of it is inside):
  every captured second of the window stays restorable from it. Older bases of the chain are
  left to the other policies.
* A segment is needed by a retained base when it holds revisions after that base. So a chain
  whose oldest retained base is a later one at revision S is **folded**: once its older bases
  are deleted, its segments that end at or before S go too, except the chain's newest segment
  (capture continues after it) and, for a backup taken while the chain captured, the segment
  holding S (the timeline reads its seen times to know the backup for the chain's:
  :func:`~lifeboat.catalog.timeline.later_bases`). The timeline then starts the
  window at S.
* A chain none of whose bases is retained goes whole (segments first, ``chain.json`` last).
  A chain with no base left at all (deleted by hand, say) goes once older than the orphan
  grace: nothing can replay it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from lifeboat.catalog.chains import ChainListing, SegmentRef
from lifeboat.catalog.timeline import SYNTHETIC_CHAIN, Base, Timeline, Window
from lifeboat.retention.plan import RetentionPlan, Verdict
from lifeboat.retention.policies import Policy, RecoveryWindow
from lifeboat.retention.records import format_time


@dataclass(frozen=True)
class ChainDecision:
    """What happens to one capture chain: kept, folded (its oldest segments go) or removed."""

    listing: ChainListing
    remove: bool  # the whole chain goes
    reason: str
    folded: tuple[SegmentRef, ...] = ()  # segments that go while the chain stays
    folded_bases: tuple[str, ...] = ()  # bases deleted first; a fold waits until all of them are
    bases: tuple[str, ...] = ()  # every base backup of the chain (a pin on one keeps the chain)

    @property
    def verdict(self) -> str:
        return "delete" if self.remove else "fold" if self.folded else "keep"

    @property
    def freed(self) -> tuple[SegmentRef, ...]:
        return self.listing.segments if self.remove else self.folded

    def as_dict(self) -> dict[str, object]:
        return {
            "chain": self.listing.info.chain, "cluster": self.listing.info.cluster,
            "segments": len(self.listing.segments), "size": sum(s.size for s in self.listing.segments),
            "segments_deleted": len(self.freed), "size_deleted": sum(s.size for s in self.freed),
            "verdict": self.verdict, "reasons": [self.reason],
        }


def keep_window_bases(plan: RetentionPlan, policies: Sequence[Policy], timelines: Sequence[Timeline],
                      now: datetime) -> RetentionPlan:
    """A recovery window counts captured seconds: keep, in every chain reaching into it, the
    base that makes each of its seconds restorable."""
    windows = [p for p in policies if isinstance(p, RecoveryWindow)]
    if not windows:
        return plan
    start = now - max(p.duration for p in windows)
    needed: dict[tuple[str, str], str] = {}
    for timeline in timelines:
        for w in timeline.windows:
            if w.chain is None or w.last_time < start:
                continue
            base, why = _window_base(w, start)
            needed[(timeline.cluster, base.manifest.id)] = why
    return _kept(plan, needed)


def keep_open_chain_bases(plan: RetentionPlan, timelines: Sequence[Timeline], now: datetime,
                          grace: timedelta) -> RetentionPlan:
    """Keep the newest base of every chain capture may still be writing (:func:`open_chain_bases`):
    deleted, it would take the chain with it while capture goes on appending segments nothing
    could restore."""
    return _kept(plan, open_chain_bases(timelines, now, grace))


def open_chain_bases(timelines: Sequence[Timeline], now: datetime, grace: timedelta) -> dict[tuple[str, str], str]:
    """(cluster, id) of the newest base of every chain capture may still be writing (no end
    recorded, written within ``grace``), and why it is needed."""
    needed: dict[tuple[str, str], str] = {}
    for timeline in timelines:
        for w in timeline.windows:
            if w.chain is None or not w.capturing or w.last_time < now - grace:
                continue
            needed[(timeline.cluster, w.bases()[-1].manifest.id)] = (
                f"newest base of capture chain {w.chain.info.chain}, which capture may still be writing "
                f"(no end recorded, last written {format_time(w.last_time)})")
    return needed


def _kept(plan: RetentionPlan, needed: dict[tuple[str, str], str]) -> RetentionPlan:
    """``plan`` with the backups of ``needed`` (cluster, id: why) kept that it would delete."""
    decisions = tuple(
        replace(d, verdict=Verdict.KEEP, reasons=(needed[(d.backup.cluster, d.backup.id)],))
        if d.verdict is Verdict.DELETE and (d.backup.cluster, d.backup.id) in needed else d
        for d in plan.decisions
    )
    return replace(plan, decisions=decisions)


def _window_base(w: Window, start: datetime) -> tuple[Base, str]:
    assert w.chain is not None
    chain = w.chain.info.chain
    bases = w.bases()
    before = [b for b in bases if b.time <= start]
    if not before or len(bases) == 1:
        return bases[0], (f"base of capture chain {chain}, which reaches into the recovery window "
                          "(every captured second of it stays restorable)")
    return before[-1], (f"newest base of capture chain {chain} seen before the recovery window starts "
                        f"({format_time(start)}): every captured second since is restorable from it")


def judge_chains(plan: RetentionPlan, chains: Sequence[ChainListing], timelines: Sequence[Timeline],
                 now: datetime, grace: timedelta,
                 unreadable: frozenset[tuple[str, str]] = frozenset()) -> tuple[ChainDecision, ...]:
    """Keep, fold or remove each chain, given which backups ``plan`` keeps.

    ``unreadable``: (cluster, id) of backups whose manifest is damaged, or whose objects have
    none: the timeline cannot see them, so a chain one of them may be a base of is kept whole
    (its own base; any, for a chain whose bases the timeline found none of) until they are
    fixed or deleted, rather than judged as if they were gone."""
    kept = {(d.backup.cluster, d.backup.id) for d in plan.decisions if d.verdict is Verdict.KEEP}
    # A chain with segments missing before one of its synthetic backups has a window from each.
    windows_of: dict[tuple[str, str], list[Window]] = {}
    for t in timelines:
        for w in t.windows:
            if w.chain is not None:
                windows_of.setdefault((t.cluster, w.chain.info.chain), []).append(w)
    found: list[ChainDecision] = []
    for listing in chains:
        cluster, chain = listing.info.cluster, listing.info.chain
        windows = windows_of.get((cluster, chain), [])
        unsure = sorted(i for c, i in unreadable if c == cluster and (not windows or i == listing.info.base_backup))
        if unsure:
            found.append(ChainDecision(listing, False, f"a base of it may be {', '.join(unsure)}, whose manifest is "
                                       "damaged or missing: kept whole until that backup is fixed or deleted"))
            continue
        if not windows:
            old = _started(listing) < now - grace
            found.append(ChainDecision(listing, old, f"its base backup {listing.info.base_backup} no longer "
                                       "exists" + ("" if old else ", but the chain is younger than the grace")))
            continue
        bases = tuple(b for w in windows for b in w.bases())
        ids = tuple(b.manifest.id for b in bases)
        retained = [b for b in bases if (cluster, b.manifest.id) in kept]
        if not retained:
            found.append(ChainDecision(listing, True, f"every base backup of it is deleted ({', '.join(ids)})",
                                       bases=ids))
            continue
        oldest = retained[0]
        newest = max(listing.segments, key=lambda s: s.last_revision, default=None)
        synthetic = SYNTHETIC_CHAIN in oldest.manifest.labels
        folded = tuple(s for s in listing.segments if s is not newest and (
            s.last_revision <= oldest.revision if synthetic else s.last_revision < oldest.revision))
        if not folded:
            found.append(ChainDecision(listing, False, f"its base backup {oldest.manifest.id} is kept", bases=ids))
            continue
        gone = tuple(b.manifest.id for b in bases if b.revision < oldest.revision)
        kind = "synthetic backup" if synthetic else "backup"
        found.append(ChainDecision(
            listing, False,
            f"folded into {kind} {oldest.manifest.id} (revision {oldest.revision}), its oldest kept "
            f"base: the {len(folded)} segment(s) before it go" + (f" with {', '.join(gone)}" if gone else ""),
            folded=folded, folded_bases=gone, bases=ids))
    return tuple(found)


def _started(listing: ChainListing) -> datetime:
    return datetime.fromisoformat(listing.info.started_at.replace("Z", "+00:00"))

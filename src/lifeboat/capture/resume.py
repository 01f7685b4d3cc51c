"""Where capture starts: right after the newest open chain's last segment, or a new base."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lifeboat.catalog.chains import ChainInfo, ChainListing
from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.segments import Predecessor
from lifeboat.catalog.timeline import build_timeline


@dataclass(frozen=True)
class Resume:
    """Resume ``info`` after ``previous``; or (``info`` None) take a new base.

    ``gap`` is (chain, last revision, reason) when the newest chain must be closed first.
    """

    info: ChainInfo | None = None
    previous: Predecessor | None = None
    gap: tuple[str, int, str] | None = None


def decide_resume(cluster: str, manifests: Sequence[Manifest], chains: Sequence[ChainListing],
                  cluster_id: str) -> Resume:
    """Pure: resume the newest chain when it is open, whole and of this etcd cluster."""
    open_chains = [c for c in chains if c.gap is None]
    if not open_chains:
        return Resume()
    newest = open_chains[-1]
    chain = newest.info.chain
    timeline = build_timeline(cluster, manifests, [newest])
    window = next((w for w in timeline.windows if w.chain is not None), None)
    if window is None:
        return Resume(gap=(chain, newest.info.base_revision,
                           f"base backup {newest.info.base_backup} of the chain no longer exists"))
    if newest.info.cluster_id != cluster_id:
        return Resume(gap=(chain, window.last_revision,
                           f"etcd is now cluster {cluster_id}, not {newest.info.cluster_id} the chain followed"))
    if not window.capturing:
        hole = next((g.reason for g in timeline.gaps), "the chain is broken")
        return Resume(gap=(chain, window.last_revision, hole))
    # The newest segment of the listing, not of the window: when a synthetic backup at the
    # chain's end folded it, the window holds no segment, but capture continues after it.
    last = max(newest.segments, key=lambda s: s.last_revision, default=None)
    previous = (Predecessor("segment", last.last_revision, last.name) if last is not None
                else Predecessor("base", newest.info.base_revision, newest.info.base_backup))
    return Resume(newest.info, previous)

"""Where capture starts: right after the newest open chain's last segment, or a new base."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from lifeboat.catalog.chains import ChainInfo, ChainListing
from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.segments import Predecessor
from lifeboat.catalog.timeline import build_timeline


@dataclass(frozen=True)
class Resume:
    """Resume ``info`` after ``previous``; or (``info`` None) take a new base.

    ``gap`` is (chain, last revision, reason) when the newest chain must be closed first.
    ``busy``: nothing may be done yet, and why (the newest chain follows another etcd cluster
    and was written too lately to tell a capture of that cluster still running from one that
    stopped when that cluster was restored).
    """

    info: ChainInfo | None = None
    previous: Predecessor | None = None
    gap: tuple[str, int, str] | None = None
    busy: str | None = None
    last_seen: datetime | None = None  # the latest time the chain records seeing etcd at


def decide_resume(cluster: str, manifests: Sequence[Manifest], chains: Sequence[ChainListing],
                  cluster_id: str, now: datetime | None = None, quiet_seconds: float = 0.0,
                  recipients: Sequence[str] = ()) -> Resume:
    """Pure: resume the newest chain when it is open, whole, of this etcd cluster and encrypted
    to ``recipients`` (none: not encrypted), as its base backup is.

    The newest chain of another etcd cluster is closed with a gap (this etcd was restored, or
    replaced) only once it has been quiet for ``quiet_seconds`` at ``now``: a chain still
    written is another cluster's capture under the same name, whose chain a gap would cut.
    A chain keeps one encryption: a capture started without the chain's recipients (a
    forgotten ``--encrypt-to`` would write the cluster's Secrets in clear beside an encrypted
    chain; another key, segments its identity does not open) ends it and starts its own."""
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
        quiet = (now - window.last_time).total_seconds() if now is not None else None
        if window.capturing and quiet is not None and quiet < quiet_seconds:
            return Resume(busy=(
                f"the newest capture chain {chain} of cluster name {cluster} follows etcd cluster "
                f"{newest.info.cluster_id} and was written {max(quiet, 0):.0f}s ago, while this etcd is cluster "
                f"{cluster_id}: if both clusters are captured under this name, give each its own --cluster; "
                f"after a restore, capture goes on with a new chain once that one is {quiet_seconds:.0f}s quiet"))
        return Resume(gap=(chain, window.last_revision,
                           f"etcd is now cluster {cluster_id}, not {newest.info.cluster_id} the chain followed"))
    if not window.capturing:
        hole = next((g.reason for g in timeline.gaps), "the chain is broken")
        return Resume(gap=(chain, window.last_revision, hole))
    if recipient_keys(window.base.recipients) != recipient_keys(recipients):
        return Resume(gap=(chain, window.last_revision,
                           f"a chain keeps one encryption: its base backup {window.base.id} is "
                           f"{encryption_words(window.base.recipients)}, this capture's segments would be "
                           f"{encryption_words(recipients)}"))
    # The newest segment of the listing, not of the window: when a synthetic backup at the
    # chain's end folded it, the window holds no segment, but capture continues after it.
    last = max(newest.segments, key=lambda s: s.last_revision, default=None)
    previous = (Predecessor("segment", last.last_revision, last.name) if last is not None
                else Predecessor("base", newest.info.base_revision, newest.info.base_backup))
    return Resume(newest.info, previous, last_seen=window.last_time)


def recipient_keys(recipients: Sequence[str]) -> frozenset[str]:
    """The public keys ``recipients`` name, whatever their order or an SSH key's comment."""
    return frozenset(" ".join(text.split()[:2]) for text in recipients)


def encryption_words(recipients: Sequence[str]) -> str:
    if not recipients:
        return "not encrypted"
    return f"encrypted to {len(recipients)} recipient(s) ({', '.join(sorted(recipient_keys(recipients)))})"

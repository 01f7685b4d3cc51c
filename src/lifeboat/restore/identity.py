"""Which etcd cluster this node's member belongs to, and whether a backup may replace its data.

A restore replaces a member's data with a backup's. Done on the wrong node (a repository
holds several clusters, ``latest`` was taken from another one, a script ran on the wrong
host) it silently turns that member into another cluster's. So before it changes anything
the restore compares the backup's source cluster with what the node says:

* the member running here, when it answers: its responses carry the cluster id;
* otherwise the data dir, read offline: bucket ``members`` (and ``members_removed``) of
  ``member/snap/db`` holds the ids of the cluster's members. The backup's source member is
  among them in the same cluster; and etcd derives a cluster's id from its initial members'
  ids (see :func:`lifeboat.snapshot.cluster_id_from_members`).

An absent or unreadable data dir with no live member says nothing, and nothing is refused.
A restore gives a cluster a new id (a new token and new member ids), so restoring a backup
taken *before* an earlier restore of this node needs ``--force`` too. The same restore asked for
again once it finished is recognised from its journal (:func:`repeats_finished_restore`) and
changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from typing import Protocol

from lifeboat.catalog.manifest import Manifest
from lifeboat.errors import LifeboatError, OperationFailed
from lifeboat.restore.journal import Journal, same_place
from lifeboat.restore.member_files import new_cluster
from lifeboat.restore.target import parse_initial_cluster
from lifeboat.snapshot import cluster_id_from_members, read_members


class ClusterIdProbe(Protocol):
    def cluster_id(self) -> int:
        """The cluster id the member running here reports; BackendUnavailable when none answers."""


@dataclass(frozen=True)
class NodeCluster:
    """What this node says about the etcd cluster its member belongs to (None/empty: unknown)."""

    live_cluster_id: int | None
    member_ids: frozenset[int]
    removed_ids: frozenset[int]
    db: Path

    def describe(self) -> str:
        if self.live_cluster_id is not None:
            return f"the etcd member running on this node belongs to cluster {self.live_cluster_id:x}"
        if self.member_ids:
            members = ", ".join(f"{m:x}" for m in sorted(self.member_ids))
            return f"{self.db} belongs to a cluster of members {members}"
        return "this node's etcd cluster is unknown"


def read_node_cluster(data_dir: Path, probe: ClusterIdProbe) -> NodeCluster:
    """Ask the live member, else read the data dir's db offline; what cannot be read stays unknown."""
    db = data_dir / "member" / "snap" / "db"
    try:
        return NodeCluster(probe.cluster_id(), frozenset(), frozenset(), db)
    except LifeboatError:
        pass  # nothing answers here: the usual state of a node being restored
    if not db.is_file():
        return NodeCluster(None, frozenset(), frozenset(), db)
    try:
        members, removed = read_members(db)
    except (LifeboatError, OSError):
        return NodeCluster(None, frozenset(), frozenset(), db)  # a damaged db is a reason to restore
    return NodeCluster(None, frozenset(m.id for m in members), frozenset(removed), db)


def recorded_client_urls(data_dir: Path, client_port: int) -> tuple[str, ...]:
    """Where the members the data dir's db records would serve clients, by kubeadm's convention:
    each member's peer host at ``client_port`` (the db keeps peer URLs, not client URLs); none
    when it cannot be read."""
    db = data_dir / "member" / "snap" / "db"
    if not db.is_file():
        return ()
    try:
        members, _removed = read_members(db)
    except (LifeboatError, OSError):
        return ()
    found: list[str] = []
    for url in (u for m in members for u in m.peer_urls):
        parts = urlsplit(url)
        if parts.hostname:
            host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            found.append(f"{parts.scheme}://{host}:{client_port}")
    return tuple(dict.fromkeys(found))


def same_cluster(manifest: Manifest, node: NodeCluster) -> bool | None:
    """Whether the backup comes from the node's cluster; None when the node says nothing."""
    cluster_id = int(manifest.source.cluster_id, 16)
    if node.live_cluster_id is not None:
        return node.live_cluster_id == cluster_id
    if not node.member_ids:
        return None
    if int(manifest.source.member_id, 16) in node.member_ids | node.removed_ids:
        return True
    return cluster_id in (cluster_id_from_members(node.member_ids),
                          cluster_id_from_members(node.member_ids | node.removed_ids))


def check_same_cluster(manifest: Manifest, node: NodeCluster, *, force: bool) -> None:
    """Refuse to restore another cluster's backup onto this node unless ``force``."""
    if force or same_cluster(manifest, node) is not False:
        return
    raise OperationFailed(
        f"backup {manifest.id} (cluster {manifest.cluster}) was taken from etcd cluster "
        f"{manifest.source.cluster_id}, but {node.describe()}; refusing to replace another cluster's "
        "data (a restore also gives a cluster a new id: if this node was restored from an older "
        "backup of the same cluster, or you mean to replace it, pass --force)"
    )


def repeats_finished_restore(journal: Journal, asked: Journal, node: NodeCluster) -> bool:
    """Whether ``asked`` is the finished restore ``journal`` records, and this node still holds
    the cluster it made: the same backup, point, data dir, member and cluster, and the node's
    cluster id (or its db's members) is the one that restore gave it."""
    same = (journal.backup_id, journal.point_revision, journal.name, journal.initial_cluster, journal.token)
    if not journal.finished or same != (asked.backup_id, asked.point_revision, asked.name,
                                         asked.initial_cluster, asked.token):
        return False
    if not same_place(Path(journal.data_dir), Path(asked.data_dir)):  # one data dir, however spelled
        return False
    restored = new_cluster([(m.name, m.peer_urls) for m in parse_initial_cluster(journal.initial_cluster)],
                           journal.token)
    if node.live_cluster_id is not None:
        return node.live_cluster_id == restored.id
    return bool(node.member_ids) and {m.id for m in restored.members} <= node.member_ids | node.removed_ids

"""``lifeboat restore plan``: the command each member's node runs to rebuild a whole cluster.

Every member is restored from the same backup with the same ``--initial-cluster`` and one
fresh ``--initial-cluster-token``; only ``--name`` and ``--initial-advertise-peer-urls``
differ. New names and URLs (a clone, a migration) are the same plan.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from lifeboat.restore.target import ClusterMember, format_initial_cluster, parse_initial_cluster, printable


@dataclass(frozen=True)
class MemberCommand:
    """The ``lifeboat restore`` command one member's node runs."""

    name: str
    peer_urls: tuple[str, ...]
    argv: tuple[str, ...]

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class ClusterRestorePlan:
    """One restore command per member: the same backup, ``--initial-cluster`` and token."""

    backup_id: str
    initial_cluster: str
    token: str
    members: tuple[MemberCommand, ...]


def plan_cluster_restore(backup_id: str, initial_cluster: str, token: str,
                         common: Sequence[str] = ()) -> ClusterRestorePlan:
    """One ``lifeboat restore`` command per member; ``common`` flags go to every one."""
    members = parse_initial_cluster(initial_cluster)
    printable(token, "--initial-cluster-token")
    canonical = format_initial_cluster(members)
    commands = tuple(_command(backup_id, m, canonical, token, common) for m in members)
    return ClusterRestorePlan(backup_id, canonical, token, commands)


def _command(backup_id: str, member: ClusterMember, initial_cluster: str, token: str,
             common: Sequence[str]) -> MemberCommand:
    argv = (
        "lifeboat", "restore", backup_id, *common,
        f"--name={member.name}",
        f"--initial-cluster={initial_cluster}",
        f"--initial-cluster-token={token}",
        f"--initial-advertise-peer-urls={','.join(member.peer_urls)}",
    )
    return MemberCommand(member.name, member.peer_urls, argv)

"""``lifeboat status``: member health, quorum, the recommended action, the newest backup's age."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from lifeboat.catalog.manifest import Manifest
from lifeboat.cli.connect import cluster_name, etcd_settings, host_root, open_repository, resolved_config
from lifeboat.cli.output import emit_json, human_size, table
from lifeboat.errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, LifeboatError, NotFound, UsageError
from lifeboat.etcd import ConnectionSettings, EtcdClient, TlsConfig
from lifeboat.kube.paths import ETCD_MANIFEST
from lifeboat.kube.static_pods import read_static_pod
from lifeboat.recovery.decision import Action, RecoveryDecision, decide_recovery
from lifeboat.recovery.health import DEFAULT_QUOTA_BYTES, ClusterHealth, MemberHealth, read_cluster_health
from lifeboat.restore.journal import journal_path, load_journal
from lifeboat.restore.node import discover_etcd
from lifeboat.restore.supervisor import manifest_paths


@dataclass(frozen=True)
class NewestBackup:
    """The newest complete backup in the repository, or why it is not known."""

    manifest: Manifest | None
    age_seconds: float | None
    problem: str | None


def cmd_status(args: argparse.Namespace) -> int:
    """etcd member health, quorum and what to do"""
    settings = node_etcd_settings(args)
    quota = args.quota_backend_bytes or quota_from_manifest(host_root(args)) or DEFAULT_QUOTA_BYTES
    with EtcdClient(settings) as etcd:
        health = read_cluster_health(etcd, settings.endpoints, quota_bytes=quota)
    decision = decide_recovery(health)
    newest = _newest_backup(args) if resolved_config(args).config.repository.url else None
    held = held_by_a_restore(host_root(args))
    if args.output == "json":
        emit_json({**status_document(health, decision, newest), "unfinished_restore": held})
    else:
        _print_status(health, decision, newest, held)
    if decision.action is Action.UNKNOWN:
        return EXIT_UNAVAILABLE
    return EXIT_OK if decision.action is Action.NOTHING else EXIT_FAILED


def held_by_a_restore(root: Path) -> str | None:
    """What to say when a lifeboat restore on this node did not finish, or None: it holds etcd's
    or kube-apiserver's static pod manifest aside (so that component is stopped), or its journal
    beside the static pod's data dir says so (stopped while it checked the started member)."""
    for component in ("etcd", "kube-apiserver"):
        live, held = manifest_paths(root, component)
        if held.is_file() and not live.exists():
            return (f"unfinished restore: {component}'s static pod manifest is held at {held} by a lifeboat restore "
                    f"that did not finish, so this node's {component} is stopped; {_RESUME_OR_ROLL_BACK}")
    try:
        found = discover_etcd(root)
        path = journal_path(found.data_dir) if found is not None and found.data_dir else None
        journal = load_journal(path) if path is not None else None
    except LifeboatError:
        return None  # an unreadable pod or journal: the restore and rollback name it when run
    if journal is None or not journal.unfinished:
        return None
    return (f"unfinished restore: the restore of backup {journal.backup_id} journaled in {path} did not finish "
            "(last step done: "
            f"{journal.done[-1] if journal.done else 'none'}); {_RESUME_OR_ROLL_BACK}")


_RESUME_OR_ROLL_BACK = "'lifeboat restore' resumes it, 'lifeboat restore --rollback' puts the old data back"


def node_etcd_settings(args: argparse.Namespace) -> ConnectionSettings:
    """How to reach etcd, as every command does; with nothing given and etcd's static pod held
    aside by an unfinished restore, the held pod's member (not etcd's default endpoint)."""
    resolved = etcd_settings(args)
    if resolved.origin != "default":
        return resolved.settings
    held = discover_etcd(host_root(args))  # no pod in the kubelet's directory: the held one, if any
    if held is None:
        return resolved.settings
    return replace(resolved.settings, endpoints=held.endpoints, tls=TlsConfig(held.ca, held.cert, held.key))


def quota_from_manifest(root: Path) -> int | None:
    """etcd's ``--quota-backend-bytes`` from its static pod, also while a restore holds it aside."""
    live, held = manifest_paths(root, "etcd")
    if live.exists():
        pod = read_static_pod(live, container="etcd")
    else:
        try:
            pod = read_static_pod(held, container="etcd")
        except UsageError:
            return None  # the held pod is the restore's to complain about; status goes on
    value = pod.flags.value("quota-backend-bytes") if pod else None
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{pod.manifest if pod else ETCD_MANIFEST}: --quota-backend-bytes={value!r} is "
                         "not a number of bytes; pass --quota-backend-bytes") from None


def _newest_backup(args: argparse.Namespace, now: datetime | None = None) -> NewestBackup:
    """The newest complete backup; a repository problem is reported, not raised."""
    try:
        repo = open_repository(args)
        try:
            newest = repo.latest(cluster_name(args, default=None))
        except NotFound:
            return NewestBackup(None, None, "no complete backup in the repository")
    except LifeboatError as exc:
        return NewestBackup(None, None, str(exc))
    return NewestBackup(newest, backup_age(newest, now or repo.clock.now()), None)


def backup_age(manifest: Manifest, now: datetime) -> float | None:
    """Seconds since the backup finished; None when its time is unreadable."""
    try:
        finished = datetime.fromisoformat(manifest.finished_at)
    except ValueError:
        return None
    if finished.tzinfo is None:
        finished = finished.replace(tzinfo=UTC)
    return max((now - finished).total_seconds(), 0.0)


def human_age(seconds: float) -> str:
    minutes, hours, days = int(seconds // 60), int(seconds // 3600), int(seconds // 86400)
    if days:
        return f"{days}d {hours % 24}h"
    if hours:
        return f"{hours}h {minutes % 60}m"
    if minutes:
        return f"{minutes}m"
    return f"{int(seconds)}s"


def status_document(health: ClusterHealth, decision: RecoveryDecision,
                    newest: NewestBackup | None) -> dict[str, object]:
    """The ``-o json`` form of status."""
    leader = health.leader
    document: dict[str, object] = {
        "cluster_id": f"{health.cluster_id:x}" if health.cluster_id is not None else None,
        "members": [_member_document(m, leader) for m in health.members],
        "voting_members": len(health.voting),
        "healthy_voting_members": len(health.healthy_voting),
        "learners": len(health.learners),
        "quorum": health.quorum if health.answered else None,
        "quorum_lost": health.quorum_lost if health.answered else None,
        "can_lose": health.can_lose if health.answered else None,
        "leader": (leader.name or f"{leader.id:x}") if leader else None,
        "summary": health.summary(),
        "endpoint_failures": list(health.endpoint_failures),
        "alarms_error": health.alarms_error,
        "decision": {
            "action": decision.action.value, "reason": decision.reason,
            "members": list(decision.members), "commands": list(decision.commands),
            "full_restore_refused": decision.restore_refusal is not None,
        },
    }
    if newest is not None:
        document["newest_backup"] = {
            "id": newest.manifest.id if newest.manifest else None,
            "finished_at": newest.manifest.finished_at if newest.manifest else None,
            "age_seconds": newest.age_seconds,
            "problem": newest.problem,
        }
    return document


def _member_document(m: MemberHealth, leader: MemberHealth | None) -> dict[str, object]:
    s = m.status
    return {
        "id": f"{m.id:x}", "name": m.name, "peer_urls": list(m.peer_urls), "client_urls": list(m.client_urls),
        "is_learner": m.is_learner, "reachable": m.reachable, "healthy": m.healthy, "problem": m.problem,
        "warnings": list(m.warnings), "is_leader": leader is not None and leader.id == m.id,
        "endpoint": s.endpoint if s else None, "version": s.version if s else None,
        "leader_id": f"{s.leader_id:x}" if s else None, "raft_term": s.raft_term if s else None,
        "raft_index": s.raft_index if s else None, "raft_applied_index": s.raft_applied_index if s else None,
        "db_size": s.db_size if s else None, "db_size_in_use": s.db_size_in_use if s else None,
        "quota_bytes": m.quota_bytes, "alarms": [a.value for a in m.alarms],
    }


def _print_status(health: ClusterHealth, decision: RecoveryDecision, newest: NewestBackup | None,
                  held: str | None = None) -> None:
    leader = health.leader
    rows = []
    for m in health.members:
        s = m.status
        share = m.db_share_of_quota
        rows.append((
            m.name or "(unstarted)", f"{m.id:x}", "healthy" if m.healthy else "FAILED",
            ("leader" if leader and leader.id == m.id else "learner" if m.is_learner else "follower"),
            s.endpoint if s else "-", s.version if s else "-", s.raft_term if s else "-",
            s.raft_index if s else "-", s.raft_applied_index if s else "-",
            human_size(s.db_size) if s else "-", f"{share:.0%}" if share is not None else "-",
            ",".join(a.value for a in m.alarms) or "-",
        ))
    if rows:
        table(("NAME", "ID", "HEALTH", "ROLE", "ENDPOINT", "VERSION", "TERM", "INDEX", "APPLIED",
               "DB", "OF QUOTA", "ALARMS"), rows)
        print()
    for m in health.members:
        for line in ([m.problem] if m.problem else []) + list(m.warnings):
            print(f"{m.name or format(m.id, 'x')}: {line}")
    for failure in health.endpoint_failures:
        print(f"endpoint {failure}")
    print(health.summary())
    if newest is not None:
        if newest.manifest is not None:
            age = human_age(newest.age_seconds) if newest.age_seconds is not None else "unknown age"
            print(f"newest backup: {newest.manifest.id} ({age} ago)")
        else:
            print(f"newest backup: none ({newest.problem})")
    if held is not None:
        print(held)
    print(f"recommended: {decision.action.value}: {decision.reason}")
    for command in decision.commands:
        print(f"  {command}")

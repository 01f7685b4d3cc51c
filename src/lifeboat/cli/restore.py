"""``lifeboat restore ID|latest`` (with ``--dry-run``, ``--rollback``) and ``lifeboat restore plan ID``."""

from __future__ import annotations

import argparse
import errno
import glob
import os
import shutil
import sys
from contextlib import nullcontext
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from lifeboat.catalog.age_keys import Identity
from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.timeline import RestorePoint
from lifeboat.cli.connect import (
    age_identities, cluster_name, etcd_settings, host_root, open_repository, resolved_config,
)
from lifeboat.cli.output import emit_json
from lifeboat.cli.point import point_target, resolve_point
from lifeboat.cli.writer import writer_choice
from lifeboat.clock import SystemClock
from lifeboat.errors import LifeboatError, NotFound, OperationFailed, UsageError
from lifeboat.etcd import ConnectionSettings, EtcdClient, TlsConfig
from lifeboat.kube.static_pods import EtcdDiscovery
from lifeboat.recovery.decision import decide_recovery, restore_allowed
from lifeboat.recovery.health import read_cluster_health
from lifeboat.restore.cluster_plan import plan_cluster_restore
from lifeboat.restore.executor import execute
from lifeboat.restore.identity import (
    check_same_cluster, read_node_cluster, recorded_client_urls, repeats_finished_restore,
)
from lifeboat.restore.journal import Journal, journal_path, lexical_path, load_own_journal, save_journal
from lifeboat.restore.lock import restore_lock
from lifeboat.restore.native import NativeRestore, native_or
from lifeboat.restore.node import EtcdMemberProbe, apiserver_port, discover_etcd
from lifeboat.restore.plan import RestoreInputs, RestorePlan, plan_restore, plan_rollback
from lifeboat.restore.steps import RestoreContext, RestorePaths
from lifeboat.restore.supervisor import (
    Component, ManualSupervisor, NodeLiveness, StaticPodSupervisor, Supervisor, SystemdSupervisor,
)
from lifeboat.restore.target import RestoreTarget, make_target, new_cluster_token
from lifeboat.etcd.binaries import RestoreTool, find_restore_tool
from lifeboat.etcd.data_dir import unused_stamp


def cmd_restore(args: argparse.Namespace) -> int:
    """restore this node's etcd member from a backup"""
    if args.backup_id == "plan":
        return cmd_plan(args)
    if args.plan_backup_id:
        raise UsageError(f"unexpected argument {args.plan_backup_id!r}; give one backup id")
    if args.rollback:
        _refuse_restore_only_flags(args)
        return cmd_rollback(args)
    if not args.backup_id and point_target(args) is None:
        raise UsageError("give a backup id or 'latest' (see 'lifeboat list'), or --to-revision/--to-time")
    return _on_this_node(args, _restore)


def _refuse_restore_only_flags(args: argparse.Namespace) -> None:
    """--rollback puts back the data dir the journaled restore moved aside: it restores no backup.
    'restore ID --rollback' read as "roll back to backup ID" and went on, ignoring the id."""
    given = [flag for flag, value in (
        ("a backup id", args.backup_id), ("--files", args.files), ("--force", args.force),
        ("--bump-revision", args.bump_revision is not None), ("--to-revision", args.to_revision is not None),
        ("--to-time", args.to_time is not None), ("--restore-with", args.restore_with is not None),
        ("--restore-tool", args.restore_tool is not None),
    ) if value]
    if given:
        raise UsageError(f"--rollback does not go with {', '.join(given)}: it puts back the data dir the journaled restore "
                         "moved aside, whatever backup that restored; leave them out (keep --root, --data-dir, "
                         "--supervisor and the member flags), or to restore a backup run 'lifeboat restore ID'")


def restore_tool(args: argparse.Namespace, snapshot_version: str) -> RestoreTool | NativeRestore:
    """The etcdutl/etcdctl for the snapshot, or lifeboat's writer in its stead (--restore-with)."""
    found = find_restore_tool(args.restore_tool, snapshot_version=snapshot_version)
    return native_or(found, choice=writer_choice(args))


_Run = Callable[[argparse.Namespace, Callable[[str], None], RestoreTarget, EtcdMemberProbe, Supervisor], int]


def _on_this_node(args: argparse.Namespace, run: _Run) -> int:
    """Restore or roll back this node's data dir, holding its lock (not for a dry run)."""
    target, probe, supervisor = _node(args)
    _require_own_directory(target.data_dir, host_root(args))
    _require_parent(target.data_dir)
    with nullcontext() if args.dry_run else restore_lock(target.data_dir):
        return run(args, _say(args), target, probe, supervisor)


def _require_own_directory(data_dir: Path, root: Path) -> None:
    """The data dir must be a directory of its own below its parent: it is moved aside, and the
    lock, journal and work dir are named after it beside it. ``/``, the host root or a path ending
    in ``..`` is none (and has no name, or not its own). A ``..`` elsewhere names it twice over (the
    journal keeps the data dir as given), so it is refused too."""
    if data_dir.name in ("", ".", "..") or data_dir == root:
        raise UsageError(f"--data-dir {data_dir} is not a directory of its own (it is a filesystem's or the "
                         "host's root, or ends in '..'); give etcd's data dir, e.g. /var/lib/etcd")
    if ".." in data_dir.parts:
        raise UsageError(f"--data-dir {data_dir} has a '..' in it; give the data dir's path without one")
    try:
        str(data_dir).encode("utf-8")
    except UnicodeEncodeError:
        # The journal records the data dir as JSON text: one it could not read back would leave a
        # restore of it neither resumable nor rolled back ("not one this lifeboat wrote").
        raise UsageError(f"--data-dir {data_dir!r} holds bytes that are not UTF-8 text; rename the data dir "
                         "(or its parents) to a UTF-8 name, then point --data-dir there") from None
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in str(data_dir)):
        # '$(cat file)' keeps no trailing newline, but a quoted read does: '/var/lib/etcd\n' is
        # another, absent, dir, restored into while etcd's own data stays where it was.
        raise UsageError(f"--data-dir {str(data_dir)!r} holds a control character (a newline, a tab); "
                         "give the data dir's path as it is")
    if len(os.fsencode(data_dir.name)) + _LONGEST_SUFFIX > _NAME_MAX:
        # Else the journal's name, or the moved-aside one once etcd was stopped, is too long to make.
        raise UsageError(f"--data-dir's name {data_dir.name[:40]}... is too long: lifeboat names files beside it "
                         f"after it, with up to {_LONGEST_SUFFIX} more bytes, and a name may have at most "
                         f"{_NAME_MAX}; give a data dir with a shorter name")


_NAME_MAX = 255  # bytes in one path component on Linux filesystems (ext4, xfs, btrfs, tmpfs)
# The longest name lifeboat makes beside the data dir: '<name>.lifeboat-restored-<stamp>-<n>'.
_LONGEST_SUFFIX = len(".lifeboat-restored-20240102T030405Z-999")


def _require_parent(data_dir: Path) -> None:
    """The data dir's parent must exist: the lock, journal and work dir go beside the data dir."""
    parent = data_dir.absolute().parent
    try:
        os.stat(parent)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise UsageError(f"--data-dir {data_dir}: its parent directory cannot be looked at: "
                             f"{exc.strerror}; check --data-dir") from None
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise UsageError(f"--data-dir {data_dir}: its parent directory {parent} {what}; "
                         "check --data-dir, or create the parent first")
    # A dry run takes no lock: without this it said OK, and the restore then failed at the lock.
    if not os.access(parent, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        read_only = bool(os.statvfs(parent).f_flag & os.ST_RDONLY)
        what = "is on a read-only filesystem" if read_only else f"is not writable by uid {os.geteuid()}"
        raise UsageError(f"--data-dir {data_dir}: its parent directory {parent} {what}; the restore moves the "
                         "data dir aside there and keeps its lock, journal and work dir beside it: "
                         + ("remount it read-write" if read_only else "run as its owner or root") + ", then re-run")


def _restore(args: argparse.Namespace, say: Callable[[str], None], target: RestoreTarget,
             probe: EtcdMemberProbe, supervisor: Supervisor) -> int:
    path = journal_path(target.data_dir)
    journal = load_own_journal(path, target.data_dir)
    backup_id = args.backup_id
    resuming = journal is not None and journal.unfinished
    if journal is not None and not resuming and not journal.finished and not journal.rolled_back:
        say(f"the earlier restore of backup {journal.backup_id} journaled in {path} stopped before it "
            "changed this node; starting a new restore")
    if journal is not None and resuming:
        # No id: a point (--to-revision/--to-time) finds its base, the journaled one when it resumes.
        if backup_id not in (None, "latest", journal.backup_id):
            raise UsageError(journal.resume_hint(path))
        backup_id = journal.backup_id
        _require_journaled_member(journal, target, args.initial_cluster_token, path)
        target = replace(target, token=journal.token)
    try:
        repo = open_repository(args)
    except LifeboatError as exc:
        if journal is None or not resuming:
            raise
        # The node's member is stopped and its data moved aside: say the way back, which needs no repository.
        raise type(exc)(f"{exc}; the unfinished restore journaled in {path} resumes once the repository "
                        "answers, or 'lifeboat restore --rollback' puts the old data back without it") from None
    identities = age_identities(args)
    if journal is not None and resuming:
        point, manifest = _journaled_backup(args, repo, identities, journal, path)
    else:
        point = resolve_point(args, repo, cluster_name(args, default=None), identities, backup_id)
        manifest = point.base if point is not None else repo.find(backup_id, cluster_name(args, default=None))
    point_revision = point.revision if point is not None else None
    if journal is not None and resuming and point_revision != journal.point_revision:
        # Its snapshot was (or is being) replayed to the journaled point: resuming it for another
        # point would restore the wrong revision after the old data dir was moved aside.
        raise UsageError(journal.resume_hint(path))
    stamp = journal.stamp if journal is not None and resuming else unused_stamp(repo.clock.now(), target.data_dir)
    if journal is None or not resuming:
        node = read_node_cluster(target.data_dir, probe)
        if journal is not None and not args.force:
            asked = _new_journal(manifest, replace(target, token=args.initial_cluster_token or journal.token),
                                 journal.stamp, point_revision)
            if repeats_finished_restore(journal, asked, node):
                return _already_restored(args, journal, path)
        check_same_cluster(manifest, node, force=args.force)
        _refuse_while_quorum(args, manifest, target.data_dir)
        journal = _new_journal(manifest, target, stamp, point_revision)
    version = manifest.source.etcd_version
    tool = restore_tool(args, version)
    plan = plan_restore(RestoreInputs(manifest, target, supervisor, tool, stamp, files=args.files,
                                      bump_revision=args.bump_revision, point=point, start=not args.no_start))
    ctx = RestoreContext(
        target=target, paths=plan.paths, supervisor=supervisor, member=probe, root=host_root(args),
        journal=journal, save=lambda j: save_journal(path, j), manifest=manifest, tool=tool, repo=repo,
        identities=identities, say=say, health_timeout=args.wait_timeout,
    )
    if args.dry_run:
        # What the restore would refuse before it changes anything (a data dir that is a file or
        # not etcd's, a mount point, no room, a tool that does not fit), the dry run refuses too.
        for step in plan.steps:
            if not step.changes_node and step.key not in journal.done:
                step.check(ctx)
        _print_plan(args, plan, journal.done)
        return 0
    for line in plan.lines(journal.done):
        say(line)
    save_journal(path, journal)
    outcome = execute(plan, ctx, auto_rollback=target.single_member and not args.no_auto_rollback)
    if args.output == "json":
        emit_json({**plan.to_dict(ctx.journal.done), "ran": list(outcome.ran), "skipped": list(outcome.skipped),
                   "moved_aside": ctx.journal.state.get("moved_aside"), "journal": str(path),
                   "started": not args.no_start})
    else:
        moved = ctx.journal.state.get("moved_aside")
        print(f"restored backup {manifest.id} as member {target.name} in {target.data_dir}"
              + (f"; the old data dir is kept at {moved}" if moved else ""))
        if plan.bump is not None:
            print(f"revision bump: {plan.bump.describe()}")
        if args.no_start:
            print("etcd was not started (--no-start)")
        print("next:")
        for line in plan.next_steps:
            print(f"  - {line}")
    return 0


def _require_journaled_member(journal: Journal, target: RestoreTarget, token: str | None, path: Path) -> None:
    """UsageError unless a resumed restore goes on as the member, cluster and token it was journaled
    with: restore-data may not have run yet, and would write this node's data dir as another member."""
    asked = (("--name", target.name, journal.name),
             ("--initial-cluster", target.initial_cluster, journal.initial_cluster),
             ("--initial-cluster-token", token or journal.token, journal.token))
    differences = [f"{flag} {given} (journaled: {journaled})" for flag, given, journaled in asked if given != journaled]
    if differences:
        raise UsageError(f"the unfinished restore journaled in {path} restores member {journal.name}, not as asked: "
                         f"{'; '.join(differences)}; re-run with the journaled values to resume it, or roll it back "
                         "with --rollback")


def _journaled_backup(args: argparse.Namespace, repo: BackupRepository, identities: list[Identity] | None,
                      journal: Journal, path: Path) -> tuple[RestorePoint | None, Manifest]:
    """The point and base backup a resumed restore goes on with: the journaled backup, of the journaled cluster.

    Deleted (pruned) since the node was changed, it can be neither fetched nor replayed again:
    the error says how to go on, from the node as it was.
    """
    point_target(args)  # a mistyped --to-time is the user's to fix, not a reason to roll back
    try:
        point = resolve_point(args, repo, journal.cluster, identities, journal.backup_id,
                              resumed_base=journal.backup_id)
        return point, point.base if point is not None else repo.find(journal.backup_id, journal.cluster)
    except (NotFound, UsageError) as exc:
        raise type(exc)(f"{exc}; {journal.gone_hint(path)}") from None


def _already_restored(args: argparse.Namespace, journal: Journal, path: Path) -> int:
    """The restore asked for is the one journaled as finished: say so, change nothing."""
    what = journal.backup_id + (f" to revision {journal.point_revision}" if journal.point_revision is not None else "")
    moved = journal.state.get("moved_aside")
    if args.output == "json":
        emit_json({"already_restored": True, "backup_id": journal.backup_id, "point_revision": journal.point_revision,
                   "data_dir": journal.data_dir, "stamp": journal.stamp, "moved_aside": moved, "journal": str(path),
                   "ran": []})
        return 0
    print(f"backup {what} was already restored as member {journal.name} in {journal.data_dir} "
          f"(restore {journal.stamp}, journal {path}); nothing was changed"
          + (f"; the data dir it replaced is kept at {moved}" if moved else ""))
    print("to restore it again over the current data (moved aside, not deleted), add --force")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    return _on_this_node(args, _rollback)


def _rollback(args: argparse.Namespace, say: Callable[[str], None], target: RestoreTarget,
              probe: EtcdMemberProbe, supervisor: Supervisor) -> int:
    path = journal_path(target.data_dir)
    journal = load_own_journal(path, target.data_dir)
    if journal is None:
        raise UsageError(f"no restore journal {path}; " + _without_a_journal(target.data_dir))
    if journal.rolled_back:
        say(f"the restore of backup {journal.backup_id} in {target.data_dir} was already rolled back")
        return 0
    if not journal.node_changed:
        return _abandon(args, journal, path, RestorePaths(target.data_dir, journal.stamp))
    stamp = journal.rollback_stamp or unused_stamp(SystemClock().now(), target.data_dir)
    paths = RestorePaths(target.data_dir, journal.stamp)
    plan = plan_rollback(journal, paths, supervisor, stamp, start=not args.no_start)
    if args.dry_run:
        _print_plan(args, plan, journal.rollback_done)
        return 0
    journal = replace(journal, rollback_stamp=stamp)
    save_journal(path, journal)
    for line in plan.lines(journal.rollback_done):
        say(line)
    ctx = RestoreContext(
        target=target, paths=paths, supervisor=supervisor, member=probe, root=host_root(args), journal=journal,
        save=lambda j: save_journal(path, j), say=say,
    )
    execute(plan, ctx, auto_rollback=False)
    if args.output == "json":
        emit_json({**plan.to_dict(ctx.journal.rollback_done), "restored_set_aside":
                   ctx.journal.state.get("restored_set_aside")})
    else:
        set_aside = ctx.journal.state.get("restored_set_aside")
        print(f"rolled back: {target.data_dir} holds the old data again; "
              + (f"the restored data is kept at {set_aside}" if set_aside else
                 "no restored data had been put in its place"))
        if plan.next_steps:
            print("etcd was not started (--no-start); next:")
            for line in plan.next_steps:
                print(f"  - {line}")
    return 0


def _without_a_journal(data_dir: Path) -> str:
    """What a rollback without a journal can say: a journal deleted by hand leaves the data dirs
    restores moved aside, which a rollback cannot put back without it."""
    moved = sorted(str(p) for p in data_dir.parent.glob(f"{glob.escape(data_dir.name)}.lifeboat-moved-*")
                   if p.is_dir() and not p.is_symlink())
    if not moved:
        return f"lifeboat restored nothing into {data_dir}"
    return (f"lifeboat cannot tell which restore to roll back; the data dirs restores moved aside are still "
            f"there ({', '.join(moved[-3:])}{', ...' if len(moved) > 3 else ''}): to put one back, stop etcd, "
            f"move {data_dir} away and rename that one to {data_dir}")


def _abandon(args: argparse.Namespace, journal: Journal, path: Path, paths: RestorePaths) -> int:
    """Clear the journal of a restore that stopped before it changed the node (and its download)."""
    if not args.dry_run:
        shutil.rmtree(paths.work, ignore_errors=True)  # lifeboat's own download, never the node's data
        path.unlink(missing_ok=True)
    message = (f"nothing to roll back: the restore of backup {journal.backup_id} stopped before it changed "
               f"{paths.data_dir} or stopped anything; " + ("its journal and work dir would be removed"
               if args.dry_run else f"its journal {path} and work dir {paths.work} are removed"))
    if args.output == "json":
        emit_json({"rolled_back": False, "nothing_to_roll_back": True, "journal": str(path),
                   "removed": not args.dry_run})
    else:
        print(message)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    target_point = point_target(args)
    if not (args.plan_backup_id or target_point) or not args.initial_cluster:
        raise UsageError("usage: lifeboat restore plan ID|--to-revision R|--to-time T "
                         "--initial-cluster NAME=PEER_URL,... [--repo URL]")
    backup_id = args.plan_backup_id
    which: list[str] = []
    if target_point is not None:
        repo = open_repository(args)
        identities = age_identities(args)
        point = resolve_point(args, repo, cluster_name(args, default=None), identities, backup_id)
        assert point is not None
        # A time must mean the same revision on every node: each command gets the revision.
        backup_id = point.base.id
        which = [f"--cluster={point.base.cluster}", f"--to-revision={point.revision}"]
    elif args.cluster or resolved_config(args).config.repository.url:
        manifest = open_repository(args).find(backup_id, cluster_name(args, default=None))
        backup_id = manifest.id  # 'latest' must mean the same backup on every node
        which = [f"--cluster={manifest.cluster}"]
    token = args.initial_cluster_token or new_cluster_token()
    plan = plan_cluster_restore(backup_id, args.initial_cluster, token, [*_every_node_flags(args), *which])
    if args.output == "json":
        emit_json({"backup_id": plan.backup_id, "initial_cluster": plan.initial_cluster, "token": plan.token,
                   "members": [{"name": m.name, "peer_urls": list(m.peer_urls), "command": m.command,
                                "argv": list(m.argv)} for m in plan.members]})
        return 0
    print(f"restore backup {plan.backup_id} onto {len(plan.members)} members (token {plan.token}).")
    print("Stop etcd and kube-apiserver on every node first; then on each node run its command "
          "(add --data-dir, --supervisor and etcd connection flags as that node needs):")
    for m in plan.members:
        print(f"\n# on the node of {m.name} ({','.join(m.peer_urls)}):\n{m.command}")
    return 0


def _every_node_flags(args: argparse.Namespace) -> list[str]:
    """What the plan was given that every member's restore needs to restore alike: the config
    file, and what flags and environment variables set over it (repository, identity files, host
    root), the writer and revision bump (every member must bump alike), ``--files`` and
    ``--no-start``. Files by absolute path, never their content; the node's own settings (data
    dir, supervisor, etcd endpoints and certificates) are left to the node. Paths are made absolute
    (without ``..``: the plan's working directory need not exist on the node)."""
    resolved = resolved_config(args)
    config = resolved.config

    def given(key: str) -> bool:  # on the command line or in the environment, not in the file
        return resolved.origin(key).kind in ("flag", "env")
    flags = [f"--config={os.path.abspath(resolved.path)}"] if resolved.path is not None else []
    if given("repository.url") and (url := config.repository.url):
        flags.append(f"--repo={url if '://' in url else os.path.abspath(url)}")  # a directory path
    if given("encryption.identity-files"):
        flags += [f"--identity={os.path.abspath(path)}" for path in config.encryption.identity_files]
    if given("root"):  # the nodes' root: it need not be a directory on the machine that plans
        flags.append(f"--root={os.path.abspath(config.root)}")
    if args.restore_with:
        flags.append(f"--restore-with={args.restore_with}")
    if args.restore_tool is not None:
        flags.append(f"--restore-tool={os.path.abspath(args.restore_tool)}")
    if args.bump_revision is not None:
        flags.append(f"--bump-revision={args.bump_revision}")
    return flags + (["--files"] if args.files else []) + (["--no-start"] if args.no_start else [])


def _node(args: argparse.Namespace) -> tuple[RestoreTarget, EtcdMemberProbe, Supervisor]:
    root = host_root(args)
    discovered = discover_etcd(root)
    given = lexical_path(args.data_dir) if args.data_dir else None  # '//a/etcd' crashed relative_to
    data_dir = root / given.relative_to("/") if given and given.is_absolute() else given
    target = make_target(name=args.name, initial_cluster=args.initial_cluster,
                         token=args.initial_cluster_token, peer_urls=args.initial_advertise_peer_urls,
                         data_dir=data_dir, discovered=discovered)
    settings = _member_settings(args, discovered)
    port = apiserver_port(root) if discovered is not None else None
    liveness = NodeLiveness(settings.endpoints, target.data_dir, port)
    kind = args.supervisor or ("kubeadm" if discovered is not None else None)
    if kind is None:
        raise UsageError(f"no etcd static pod under {root} (--root, $LIFEBOAT_ROOT or the config file's root): "
                         "pass --supervisor systemd or --supervisor none")
    supervisor: Supervisor
    if kind == "kubeadm":
        supervisor = StaticPodSupervisor(root, liveness)
    elif kind == "systemd":
        units: dict[Component, str] = {"etcd": args.etcd_unit}
        if args.apiserver_unit:
            units["kube-apiserver"] = args.apiserver_unit
        supervisor = SystemdSupervisor(units, liveness)
    else:
        supervisor = ManualSupervisor(liveness)
    return target, EtcdMemberProbe(settings), supervisor


def _refuse_while_quorum(args: argparse.Namespace, manifest: Manifest, data_dir: Path) -> None:
    """Stop before touching the node while the backup's cluster keeps quorum (the decision table).

    Only the backup's own cluster counts: members already restored from it answer as a new
    cluster (a restore gives a new cluster id), and must not stop the rest of that restore.
    Not asked on resume: by then this member is stopped and its data moved aside.
    A kubeadm node names only its own member (the static pod's loopback URL), which, down,
    answers nothing about the others: so the member the backup was taken from and the members
    the data dir records (at their peer hosts, on this member's client port) are asked too.
    """
    if args.force:
        return
    settings = _cluster_settings(args, discover_etcd(host_root(args)))
    port = urlsplit(settings.endpoints[0]).port or 2379
    others = (manifest.source.endpoint, *recorded_client_urls(data_dir, port))
    # Another host's loopback URL names this host's (down) member, and a member of another
    # cluster that answers does not count: asking more refuses only what the decision table does.
    settings = replace(settings, endpoints=tuple(dict.fromkeys((*settings.endpoints, *others))))
    with EtcdClient(settings) as etcd:
        health = read_cluster_health(etcd, settings.endpoints)
    decision = decide_recovery(health)
    if health.cluster_id != int(manifest.source.cluster_id, 16) or restore_allowed(decision, force=False):
        return
    instead = "; ".join(decision.commands)
    raise OperationFailed(f"{decision.restore_refusal}" + (f" (run: {instead})" if instead else ""))


def _member_settings(args: argparse.Namespace, discovered: EtcdDiscovery | None) -> ConnectionSettings:
    settings = _cluster_settings(args, discovered)
    # Only this member is asked: it is the one that was restored.
    return replace(settings, endpoints=settings.endpoints[:1])


def _cluster_settings(args: argparse.Namespace, discovered: EtcdDiscovery | None) -> ConnectionSettings:
    settings = etcd_settings(args).settings
    # A flag or its ETCDCTL_* variable beats the pod, as in every command; the config file does not.
    resolved = resolved_config(args)
    explicit = any(resolved.origin(key).kind in ("flag", "env")
                   for key in ("etcd.endpoints", "etcd.cacert", "etcd.cert", "etcd.key"))
    if discovered is not None and not explicit:
        # Mid-restore the manifest is held, where connect's discovery does not look.
        tls = TlsConfig(discovered.ca, discovered.cert, discovered.key)
        settings = replace(settings, endpoints=discovered.endpoints, tls=tls)
    return settings


def _new_journal(manifest: Manifest, target: RestoreTarget, stamp: str, point_revision: int | None) -> Journal:
    return Journal(backup_id=manifest.id, cluster=manifest.cluster, data_dir=str(target.data_dir),
                   name=target.name, initial_cluster=target.initial_cluster, token=target.token, stamp=stamp,
                   point_revision=point_revision)


def _print_plan(args: argparse.Namespace, plan: RestorePlan, done: tuple[str, ...]) -> None:
    if args.output == "json":
        emit_json(plan.to_dict(done))
        return
    for line in plan.lines(done):
        print(line)
    if plan.next_steps:
        print("after it:")
        for line in plan.next_steps:
            print(f"  - {line}")
    print("(dry run: nothing was changed)")


def _say(args: argparse.Namespace) -> Callable[[str], None]:
    stream = sys.stderr if args.output == "json" else sys.stdout

    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    return say


"""``lifeboat prune``, ``lifeboat pin`` and ``lifeboat unpin``."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from datetime import timedelta

from lifeboat.retention.prune import ORPHAN_GRACE, PrunePlan, PruneResult, apply_prune, plan_prune
from lifeboat.catalog.pins import Pin
from lifeboat.cli.connect import cluster_name, open_repository, resolved_config
from lifeboat.cli.output import emit_json, human_size, table
from lifeboat.config import check_orphan_grace, parse_seconds
from lifeboat.config.rules import PIN_REASON_MAX, plain_text_problem
from lifeboat.errors import UsageError
from lifeboat.retention import POLICY_CLASSES, Policy, parse_policies
from lifeboat.retention.records import format_time


def cmd_prune(args: argparse.Namespace) -> int:
    """delete the backups the retention policies do not keep"""
    policies, min_redundancy, grace = _retention(args)
    repo = open_repository(args)
    plan = plan_prune(repo, policies, repo.clock.now(), cluster=cluster_name(args, default=None),
                      min_redundancy=min_redundancy, orphan_grace=grace)
    as_json = args.output == "json"
    if not as_json:
        _print_plan(plan)
    result = None
    if not args.dry_run:
        say = (lambda what, backup_id: None) if as_json else (lambda what, backup_id: print(f"{what} {backup_id}"))
        result = apply_prune(repo, plan, on_step=say)
    if as_json:
        emit_json(_plan_json(plan, result))
    elif result is None:
        print("dry run: nothing deleted")
    else:
        print(f"deleted {len(result.deleted)} backup(s), {len(result.chains_removed)} capture chain(s), "
              f"{result.segments_removed} folded capture segment(s), "
              f"{len(result.orphans_removed)} orphan(s) and {len(result.incomplete_removed)} unfinished upload(s), "
              f"freed {human_size(result.bytes_freed)}")
    return 0


def _retention(args: argparse.Namespace) -> tuple[list[Policy], int, timedelta]:
    config = resolved_config(args).config.retention
    given = {name: getattr(args, name.replace("-", "_")) for name in POLICY_CLASSES}
    given = {name: value for name, value in given.items() if value is not None}
    if given:
        policies = parse_policies(given)
    elif config is not None:
        policies = parse_policies(config.policies())
    else:
        raise UsageError("no retention policy: set retention: in the config file "
                         "or pass one, e.g. --keep-last 7")
    min_redundancy = args.min_redundancy if args.min_redundancy is not None else (
        config.min_redundancy if config else 1)
    if min_redundancy < 0:
        raise UsageError(f"--min-redundancy must be 0 or more, got {min_redundancy}")
    if args.orphan_grace is not None:
        try:
            grace = timedelta(seconds=check_orphan_grace(parse_seconds(args.orphan_grace)))
        except ValueError as exc:
            raise UsageError(f"--orphan-grace: {exc}") from None
    else:
        grace = timedelta(seconds=config.orphan_grace) if config else ORPHAN_GRACE
    return policies, min_redundancy, grace


INCOMPLETE_NOT_LISTED = (
    "a backup killed with SIGKILL may have left unfinished multipart uploads; a bucket lifecycle "
    "rule AbortIncompleteMultipartUpload removes them"
)


def _print_plan(plan: PrunePlan) -> None:
    rows: list[tuple[object, ...]] = [
        (d.verdict.value.upper(), d.backup.id, d.backup.cluster, format_time(d.backup.taken_at),
         d.backup.status, human_size(d.backup.size), "pinned" if d.backup.pinned else "-",
         "; ".join(d.reasons))
        for d in plan.retention.decisions
    ]
    rows += [
        ("DELETE" if o.remove else "KEEP", o.orphan.backup_id, o.orphan.cluster,
         format_time(o.orphan.started_at), "orphan", human_size(o.orphan.size), "-", o.reason)
        for o in plan.orphans
    ]
    rows += [
        (c.verdict.upper(), c.listing.info.chain, c.listing.info.cluster, c.listing.info.started_at,
         f"chain ({len(c.listing.segments)} segments" + (f", {len(c.folded)} go)" if c.folded else ")"),
         human_size(sum(s.size for s in (c.folded or c.listing.segments))),
         "-", c.reason)
        for c in plan.chains
    ]
    rows += [
        ("DELETE" if i.remove else "KEEP", i.upload.name, "-", format_time(i.upload.modified),
         "multipart upload" if i.upload.upload_id else "temp file", human_size(i.upload.size), "-", i.reason)
        for i in plan.incomplete
    ]
    table(("VERDICT", "ID", "CLUSTER", "TAKEN", "STATUS", "SIZE", "PIN", "REASON"), rows)
    print(plan.retention.summary())
    if not plan.incomplete_listed:
        print(f"note: unfinished uploads not checked: {plan.incomplete_unlisted}; {INCOMPLETE_NOT_LISTED}")


def _plan_json(plan: PrunePlan, result: PruneResult | None) -> dict[str, object]:
    return {
        "dry_run": result is None,
        "policies": list(plan.retention.policies),
        "min_redundancy": plan.retention.min_redundancy,
        "decisions": [d.as_dict() for d in plan.retention.decisions],
        "orphans": [o.as_dict() for o in plan.orphans],
        "chains": [c.as_dict() for c in plan.chains],
        "chains_removed": result.chains_removed if result else [],
        "segments_removed": result.segments_removed if result else 0,
        "deleted": result.deleted if result else [],
        "skipped": result.skipped if result else [],
        "orphans_removed": result.orphans_removed if result else [],
        "temp_objects": [i.as_dict() for i in plan.incomplete],
        "temp_objects_listed": plan.incomplete_listed,
        "temp_objects_not_listed_because": plan.incomplete_unlisted or None,
        "temp_objects_removed": result.incomplete_removed if result else [],
        "multipart_uploads_aborted": result.uploads_aborted if result else 0,
        "bytes_freed": result.bytes_freed if result else 0,
    }


def cmd_pin(args: argparse.Namespace) -> int:
    """pin a backup so that no prune deletes it"""
    if (problem := plain_text_problem(args.reason, PIN_REASON_MAX)) is not None:
        raise UsageError(f"--reason {problem}")
    repo = open_repository(args)
    manifest = repo.find(args.backup_id, cluster_name(args, default=None))
    pin = Pin.now(args.reason, clock=repo.clock)
    repo.pin(manifest, pin)
    if args.output == "json":
        emit_json({"pinned": manifest.id, "cluster": manifest.cluster, "pin": asdict(pin)})
    else:
        print(f"pinned backup {manifest.id} of cluster {manifest.cluster}")
    return 0


def cmd_unpin(args: argparse.Namespace) -> int:
    """remove a backup's pin"""
    repo = open_repository(args)
    manifest = repo.find(args.backup_id, cluster_name(args, default=None))
    was_pinned = repo.unpin(manifest)
    if args.output == "json":
        emit_json({"unpinned": manifest.id, "cluster": manifest.cluster, "was_pinned": was_pinned})
    else:
        print(f"unpinned backup {manifest.id}" if was_pinned else f"backup {manifest.id} was not pinned")
    return 0

"""Turning a SOURCE argument of ``lifeboat k8s`` into something to read objects from.

SOURCE is ``live`` (the etcd the etcd flags point at), an existing snapshot file, or a
backup id (or ``latest``) in ``--repo``. A backup is fetched, checked like ``lifeboat
verify`` does and decrypted to a temporary file once, then read offline.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from lifeboat.catalog.age_keys import Identity
from lifeboat.catalog.repository import BackupRepository
from lifeboat.cli.point import point_target, resolve_point
from lifeboat.pitr import build_point_snapshot
from lifeboat.cli.connect import (
    age_identities, cluster_name, etcd_settings, open_repository, resolved_config, temp_dir,
)
from lifeboat.errors import IntegrityError, UsageError
from lifeboat.etcd import EtcdClient
from lifeboat.kube.inventory import LiveEtcdSource, ObjectSource, SnapshotFileSource
from lifeboat.kube.objects import EncryptionConfiguration, load_encryption_configuration
from lifeboat.snapshot.spool import spool_dir
from lifeboat.verify.backup import verify_backup

LIVE = "live"


def encryption_config(args: argparse.Namespace) -> EncryptionConfiguration | None:
    path: Path | None = args.encryption_config
    return load_encryption_configuration(path) if path else None


def live_client(args: argparse.Namespace, stack: ExitStack) -> tuple[EtcdClient, str]:
    resolved = etcd_settings(args)
    client = stack.enter_context(EtcdClient(resolved.settings))
    return client, ",".join(resolved.settings.endpoints)


def open_source(text: str, args: argparse.Namespace, stack: ExitStack) -> ObjectSource:
    """The source ``text`` names; temporary files and connections close with ``stack``."""
    if text == LIVE:
        client, endpoints = live_client(args, stack)
        return LiveEtcdSource(client, endpoints)
    path = Path(text)
    if path.exists():
        return SnapshotFileSource(path)
    if not resolved_config(args).config.repository.url:
        raise UsageError(f"SOURCE {text!r} is not 'live' nor an existing snapshot file; to read a backup "
                         "of that id pass --repo URL, set LIFEBOAT_REPO, or set repository.url in the config file")
    return _backup_source(text, args, stack)


def _backup_source(backup_id: str, args: argparse.Namespace, stack: ExitStack) -> ObjectSource:
    identities = age_identities(args)
    repo = open_repository(args)
    tmp = stack.enter_context(spool_dir("k8s", temp_dir(args)))
    if point_target(args) is not None:
        if getattr(args, "_point_source_opened", False):
            raise UsageError("--to-revision/--to-time apply to one backup SOURCE; compare a point with "
                             "'live' or a snapshot file")
        args._point_source_opened = True
        return _point_source(backup_id, args, repo, identities, tmp)
    manifest = repo.find(backup_id, cluster_name(args, default=None))
    spool = tmp / "snapshot.db"
    report = verify_backup(repo, manifest, identities, tmp_dir=temp_dir(args), keep_snapshot=spool)
    failure = report.first_failure()
    if failure is not None:
        raise IntegrityError(f"backup {manifest.id} failed verification ({failure.name}: "
                             f"{failure.detail}); pick another backup")
    cluster_id = int(manifest.source.cluster_id, 16)
    revision = manifest.snapshot.revision
    return SnapshotFileSource(spool, description=f"backup {manifest.id} of cluster {manifest.cluster}",
                              cluster_id=cluster_id, revision=revision)


def _point_source(backup_id: str, args: argparse.Namespace, repo: BackupRepository,
                  identities: Sequence[Identity] | None, tmp: Path) -> ObjectSource:
    """The cluster at ``--to-revision``/``--to-time``: the base replayed offline into a temp file."""
    point = resolve_point(args, repo, cluster_name(args, default=None), identities, backup_id)
    assert point is not None
    built = build_point_snapshot(repo, point, identities, tmp / "snapshot.db")
    m = point.base
    return SnapshotFileSource(built.path, description=f"cluster {m.cluster} at revision {point.revision} "
                              f"(backup {m.id} + capture)", cluster_id=int(m.source.cluster_id, 16),
                              revision=point.revision)

"""The backup repository: format marker, a backup's objects, commit and delete order.

Object names come from :mod:`lifeboat.catalog.layout`. A backup exists only once its
manifest exists: data objects without a manifest are the remains of an interrupted backup
or delete and are never listed as backups. Callers read and write a backup's objects
through :class:`BackupRepository`, never through its object store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from lifeboat import __version__
from lifeboat.catalog.ids import check_backup_id, check_cluster_name
from lifeboat.catalog.layout import (
    MARKER_KEY,
    BackupObjectName,
    backup_object_key,
    backup_prefix,
    backups_prefix,
    manifest_key,
    parse_backup_key,
    pin_key,
)
from lifeboat.catalog.manifest import BackupStatus, DamagedManifest, Manifest
from lifeboat.catalog.pins import Pin
from lifeboat.errors import AlreadyExists, IntegrityError, NotFound, UsageError
from lifeboat.store.base import ObjectInfo, ObjectStore

REPOSITORY_FORMAT = 1

class BackupRef(Protocol):
    """What names a backup: a manifest, or a damaged one."""

    @property
    def cluster(self) -> str: ...

    @property
    def id(self) -> str: ...


@dataclass(frozen=True)
class Listing:
    """What a repository holds: readable backups (oldest first) and damaged manifests."""

    backups: tuple[Manifest, ...]
    damaged: tuple[DamagedManifest, ...]


class BackupRepository:
    """Backups of one or more clusters in one object store."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @property
    def url(self) -> str:
        return self.store.url

    @classmethod
    def open(cls, store: ObjectStore, *, create: bool = False) -> BackupRepository:
        """Open the repository in ``store``; with ``create``, initialise an empty store."""
        repo = cls(store)
        try:
            marker = store.get_bytes(MARKER_KEY)
        except NotFound:
            if not create:
                raise NotFound(
                    f"no lifeboat repository at {store.url} (no {MARKER_KEY}); "
                    "check --repo, or run 'lifeboat backup' to create one"
                ) from None
            repo._create_marker()
            return repo
        repo._check_marker(marker)
        return repo

    def _create_marker(self) -> None:
        if next(iter(self.store.list("")), None) is not None:
            raise UsageError(
                f"{self.store.url} is not empty and is not a lifeboat repository; "
                "use an empty bucket prefix or directory"
            )
        marker = {
            "format": "lifeboat-repository",
            "version": REPOSITORY_FORMAT,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "created_by": f"lifeboat {__version__}",
        }
        try:
            self.store.put_bytes(MARKER_KEY, json.dumps(marker).encode(), create_only=True)
        except AlreadyExists:
            # Another agent created it at the same moment: theirs is as good as ours.
            self._check_marker(self.store.get_bytes(MARKER_KEY))

    def _check_marker(self, data: bytes) -> None:
        try:
            marker = json.loads(data)
            version = int(marker["version"])
            if marker["format"] != "lifeboat-repository":
                raise ValueError("wrong format name")
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"{self.store.url}: {MARKER_KEY} is not a lifeboat marker") from None
        if version > REPOSITORY_FORMAT:
            raise UsageError(
                f"repository {self.store.url} has format {version}, newer than this lifeboat "
                f"understands ({REPOSITORY_FORMAT}); upgrade lifeboat"
            )

    def object_key(self, manifest: Manifest, name: str) -> str:
        return backup_object_key(manifest.cluster, manifest.id, name)

    def write_object(self, cluster: str, backup_id: str, name: str, chunks: Iterable[bytes]) -> None:
        """Store one data object of a backup not committed yet (overwriting a partial one)."""
        self.store.put_stream(backup_object_key(cluster, backup_id, name), chunks)

    def read_object(self, manifest: Manifest, name: str) -> Iterator[bytes]:
        """The stored bytes of one of a committed backup's objects, as they come."""
        return self.store.get_stream(self.object_key(manifest, name))

    def backup_objects(self, cluster: str | None = None) -> Iterator[tuple[BackupObjectName, ObjectInfo]]:
        """Every object in a backup's folder, committed or not, with its name taken apart."""
        for obj in self.store.list(backups_prefix(cluster)):
            name = parse_backup_key(obj.key)
            if name is not None:
                yield name, obj

    def commit(self, manifest: Manifest) -> None:
        """Write the manifest, create-only: the moment the backup starts to exist."""
        key = manifest_key(check_cluster_name(manifest.cluster), manifest.id)
        self.store.put_bytes(key, manifest.to_json(), create_only=True)

    def scan(self, cluster: str | None = None) -> Listing:
        """Every committed backup (oldest first) and every damaged manifest, from one listing.

        A manifest that cannot be read does not stop the listing: it is reported in
        ``damaged`` with the reason, and its backup is never used.
        """
        names = [name for name, _ in self.backup_objects(cluster) if name.is_manifest]
        names.sort(key=lambda n: (n.backup_id, n.cluster))
        backups: list[Manifest] = []
        damaged: list[DamagedManifest] = []
        for name in names:
            cluster_name, backup_id = name.cluster, name.backup_id
            key = manifest_key(cluster_name, backup_id)
            try:
                data = self.store.get_bytes(key)
            except NotFound:
                continue  # deleted while we listed
            try:
                manifest = Manifest.from_json(data, where=f"{self.store.url}/{key}")
                if (manifest.cluster, manifest.id) != (cluster_name, backup_id):
                    raise IntegrityError(f"manifest {self.store.url}/{key} names backup {manifest.id} of "
                                         f"cluster {manifest.cluster}, not the one it is stored as")
            except IntegrityError as exc:
                damaged.append(DamagedManifest(cluster_name, backup_id, key, str(exc)))
                continue
            backups.append(manifest)
        return Listing(tuple(backups), tuple(damaged))

    def manifests(self, cluster: str | None = None) -> Iterator[Manifest]:
        """Every committed backup (complete or failed) whose manifest is readable, oldest first."""
        yield from self.scan(cluster).backups

    def find(self, backup_id: str, cluster: str | None = None) -> Manifest:
        """The manifest of ``backup_id``; ``latest`` is the newest complete backup.

        ``latest`` needs ``cluster`` when the repository holds more than one cluster (a
        UsageError naming them): the newest backup of *any* cluster is never what is meant.

        A damaged manifest is never chosen as ``latest``; asked for by id, it is an
        IntegrityError that says why and how to delete it.
        """
        found = self.locate(backup_id, cluster)
        if isinstance(found, DamagedManifest):
            raise IntegrityError(f"{found.reason}; the backup cannot be used (remove it with "
                                 f"'lifeboat delete {found.id} --cluster {found.cluster}')")
        return found

    def locate(self, backup_id: str, cluster: str | None = None) -> Manifest | DamagedManifest:
        """Like :meth:`find`, but a damaged manifest asked for by id is returned (for ``delete``)."""
        listing = self.scan(cluster)
        if backup_id == "latest":
            clusters = sorted({m.cluster for m in listing.backups} | {d.cluster for d in listing.damaged})
            if cluster is None and len(clusters) > 1:
                raise UsageError(f"'latest' is ambiguous: {self.store.url} holds backups of clusters "
                                 f"{', '.join(clusters)}; pass --cluster NAME (or set $LIFEBOAT_CLUSTER)")
            complete = [m for m in listing.backups if m.status == BackupStatus.COMPLETE]
            if not complete:
                where = f" of cluster {cluster}" if cluster else ""
                raise NotFound(f"no complete backup{where} in {self.store.url}")
            return complete[-1]
        check_backup_id(backup_id)
        found: list[Manifest | DamagedManifest] = [m for m in listing.backups if m.id == backup_id]
        found += [d for d in listing.damaged if d.id == backup_id]
        if not found:
            raise NotFound(f"backup {backup_id} not found in {self.store.url} (see 'lifeboat list')")
        if len(found) > 1:
            raise UsageError(f"backup {backup_id} exists for several clusters; pass --cluster")
        return found[0]

    def delete(self, backup: BackupRef) -> None:
        """Delete the backup's data objects first and its manifest last (re-runnable)."""
        last = manifest_key(backup.cluster, backup.id)
        for obj in list(self.store.list(backup_prefix(backup.cluster, backup.id))):
            if obj.key != last:
                self.store.delete(obj.key)
        self.store.delete(last)

    def pin(self, manifest: Manifest, pin: Pin) -> None:
        """Pin a committed backup (replacing an earlier pin's who/when/why)."""
        if self.store.stat(manifest_key(manifest.cluster, manifest.id)) is None:
            raise NotFound(f"backup {manifest.id} of cluster {manifest.cluster} no longer exists")
        self.store.put_bytes(pin_key(manifest.cluster, manifest.id), pin.to_json())

    def unpin(self, manifest: Manifest) -> bool:
        """Remove the pin; False when the backup was not pinned."""
        key = pin_key(manifest.cluster, manifest.id)
        if self.store.stat(key) is None:
            return False
        self.store.delete(key)
        return True

    def pin_of(self, backup: BackupRef) -> Pin | None:
        """The backup's pin, read now (not cached), or None."""
        key = pin_key(backup.cluster, backup.id)
        try:
            return Pin.from_json(self.store.get_bytes(key), where=f"{self.store.url}/{key}")
        except NotFound:
            return None

    def pins(self, cluster: str | None = None) -> dict[tuple[str, str], Pin]:
        """Every pin, by (cluster, backup id), from one listing."""
        found: dict[tuple[str, str], Pin] = {}
        for name, obj in list(self.backup_objects(cluster)):
            if name.is_pin:
                try:
                    data = self.store.get_bytes(obj.key)
                except NotFound:
                    continue  # unpinned while we listed
                found[(name.cluster, name.backup_id)] = Pin.from_json(data, where=f"{self.store.url}/{obj.key}")
        return found

    def discard_objects(self, cluster: str, backup_id: str) -> None:
        """Remove the data objects of a backup that was never committed (best effort)."""
        last = manifest_key(cluster, backup_id)
        for obj in list(self.store.list(backup_prefix(cluster, backup_id))):
            if obj.key != last:
                self.store.delete(obj.key)

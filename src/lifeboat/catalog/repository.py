"""The backup repository: format marker, key layout, commit and delete order.

Layout inside an object store::

    lifeboat-repository.json                       format marker (written once, create-only)
    clusters/<cluster>/backups/<id>/snapshot.db.zst[.age]
    clusters/<cluster>/backups/<id>/control-plane.tar.zst[.age]
    clusters/<cluster>/backups/<id>/manifest.json  written last, deleted last
    clusters/<cluster>/backups/<id>/pin.json       optional, only beside a manifest (see pins.py)

A backup exists only once its manifest exists: data objects without a manifest are the
remains of an interrupted backup or delete and are never listed as backups.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone

from lifeboat import __version__
from lifeboat.catalog.ids import check_backup_id, check_cluster_name
from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.pins import PIN_NAME, Pin
from lifeboat.errors import AlreadyExists, NotFound, UsageError
from lifeboat.store.base import ObjectStore

MARKER_KEY = "lifeboat-repository.json"
REPOSITORY_FORMAT = 1
MANIFEST_NAME = "manifest.json"


def backup_prefix(cluster: str, backup_id: str) -> str:
    return f"clusters/{cluster}/backups/{backup_id}/"


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
        return backup_prefix(manifest.cluster, manifest.id) + name

    def commit(self, manifest: Manifest) -> None:
        """Write the manifest, create-only: the moment the backup starts to exist."""
        key = backup_prefix(check_cluster_name(manifest.cluster), manifest.id) + MANIFEST_NAME
        self.store.put_bytes(key, manifest.to_json(), create_only=True)

    def manifests(self, cluster: str | None = None) -> Iterator[Manifest]:
        """Every committed backup (complete or failed), oldest first."""
        prefix = f"clusters/{cluster}/backups/" if cluster else "clusters/"
        keys = [o.key for o in self.store.list(prefix) if o.key.endswith("/" + MANIFEST_NAME)]
        keys.sort(key=lambda k: (k.rsplit("/", 2)[-2], k))
        for key in keys:
            try:
                data = self.store.get_bytes(key)
            except NotFound:
                continue  # deleted while we listed
            yield Manifest.from_json(data, where=f"{self.store.url}/{key}")

    def find(self, backup_id: str, cluster: str | None = None) -> Manifest:
        """The manifest of ``backup_id``; ``latest`` is the newest complete backup."""
        if backup_id == "latest":
            complete = [m for m in self.manifests(cluster) if m.status == "complete"]
            if not complete:
                where = f" of cluster {cluster}" if cluster else ""
                raise NotFound(f"no complete backup{where} in {self.store.url}")
            return complete[-1]
        check_backup_id(backup_id)
        found = [m for m in self.manifests(cluster) if m.id == backup_id]
        if not found:
            raise NotFound(f"backup {backup_id} not found in {self.store.url} (see 'lifeboat list')")
        if len(found) > 1:
            raise UsageError(f"backup {backup_id} exists for several clusters; pass --cluster")
        return found[0]

    def delete(self, manifest: Manifest) -> None:
        """Delete the backup's data objects first and its manifest last (re-runnable)."""
        prefix = backup_prefix(manifest.cluster, manifest.id)
        manifest_key = prefix + MANIFEST_NAME
        for obj in list(self.store.list(prefix)):
            if obj.key != manifest_key:
                self.store.delete(obj.key)
        self.store.delete(manifest_key)

    def pin(self, manifest: Manifest, pin: Pin) -> None:
        """Pin a committed backup (replacing an earlier pin's who/when/why)."""
        prefix = backup_prefix(manifest.cluster, manifest.id)
        if self.store.stat(prefix + MANIFEST_NAME) is None:
            raise NotFound(f"backup {manifest.id} of cluster {manifest.cluster} no longer exists")
        self.store.put_bytes(prefix + PIN_NAME, pin.to_json())

    def unpin(self, manifest: Manifest) -> bool:
        """Remove the pin; False when the backup was not pinned."""
        key = backup_prefix(manifest.cluster, manifest.id) + PIN_NAME
        if self.store.stat(key) is None:
            return False
        self.store.delete(key)
        return True

    def pin_of(self, manifest: Manifest) -> Pin | None:
        """The backup's pin, read now (not cached), or None."""
        key = backup_prefix(manifest.cluster, manifest.id) + PIN_NAME
        try:
            return Pin.from_json(self.store.get_bytes(key), where=f"{self.store.url}/{key}")
        except NotFound:
            return None

    def pins(self, cluster: str | None = None) -> dict[tuple[str, str], Pin]:
        """Every pin, by (cluster, backup id), from one listing."""
        prefix = f"clusters/{cluster}/backups/" if cluster else "clusters/"
        found: dict[tuple[str, str], Pin] = {}
        for obj in self.store.list(prefix):
            parts = obj.key.split("/")
            if len(parts) == 5 and parts[4] == PIN_NAME:
                try:
                    data = self.store.get_bytes(obj.key)
                except NotFound:
                    continue  # unpinned while we listed
                found[(parts[1], parts[3])] = Pin.from_json(data, where=f"{self.store.url}/{obj.key}")
        return found

    def discard_objects(self, cluster: str, backup_id: str) -> None:
        """Remove the data objects of a backup that was never committed (best effort)."""
        prefix = backup_prefix(cluster, backup_id)
        for obj in list(self.store.list(prefix)):
            if not obj.key.endswith("/" + MANIFEST_NAME):
                self.store.delete(obj.key)

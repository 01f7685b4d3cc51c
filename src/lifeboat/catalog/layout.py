"""Every object name in a lifeboat repository: the one module that spells the layout.

Inside an object store, a repository of format 2 (what lifeboat creates)::

    lifeboat-repository.json                               format marker (written once)
    clusters/<cluster>/backups/<id>/snapshot.db.zst[.age]  a backup's data objects
    clusters/<cluster>/backups/<id>/control-plane.tar.zst[.age]
    clusters/<cluster>/manifests/<id>.json                 the manifest: written last, deleted last
    clusters/<cluster>/pins/<id>.json                      a pin, only beside a manifest
    clusters/<cluster>/chains/<chain>/...                  continuous capture (see below)
    clusters/<cluster>/locks/<name>.json                   reserved for repository locks

Format 1 (repositories made before format 2, still read and written as they are) keeps the
manifest and the pin inside the backup's folder, ``backups/<id>/manifest.json`` and
``backups/<id>/pin.json``. Finding its backups is a listing of every backup's folder, which
S3 servers such as SeaweedFS answer folder by folder; format 2's manifests are one flat
folder, listed in a fraction of that time. A :class:`Layout` subclass a format says where it keeps
them; :data:`LAYOUTS` holds one of each by the marker's version.

A new kind of stored object gets its prefix and names here, under ``clusters/<cluster>/``,
beside ``backups/``; nothing else builds a key from strings. Continuous capture keeps one
folder per chain (a base backup and the segments after it)::

    clusters/<cluster>/chains/<chain>/chain.json           written once, before the first segment
    clusters/<cluster>/chains/<chain>/segments/<name>      the captured revisions
    clusters/<cluster>/chains/<chain>/heartbeat.json       rewritten while capture is idle
    clusters/<cluster>/chains/<chain>/gap.json             written once when the chain ends
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from lifeboat.catalog.ids import is_backup_id

MARKER_KEY = "lifeboat-repository.json"
CLUSTERS = "clusters/"

# A backup's objects. Stored names add ".zst" and, when encrypted, ".age" (see stored_name).
SNAPSHOT_OBJECT = "snapshot.db"
FILES_OBJECT = "control-plane.tar"
# Format 1 keeps these inside the backup's folder; format 2 as <id>.json in flat folders.
MANIFEST_NAME = "manifest.json"
PIN_NAME = "pin.json"
MANIFESTS_DIR = "manifests/"
PINS_DIR = "pins/"
RECORD_SUFFIX = ".json"

# Continuous capture's objects inside one chain's folder.
CHAIN_NAME = "chain.json"
HEARTBEAT_NAME = "heartbeat.json"
GAP_NAME = "gap.json"
SEGMENTS_DIR = "segments/"


def stored_name(base: str, encrypted: bool) -> str:
    """The name a data object is stored under: zstd always, then age when encrypted."""
    return base + (".zst.age" if encrypted else ".zst")


def cluster_prefix(cluster: str | None) -> str:
    """Everything of ``cluster``; every cluster's everything when None."""
    return f"{CLUSTERS}{cluster}/" if cluster else CLUSTERS


def backups_prefix(cluster: str | None) -> str:
    """Every backup of ``cluster``; with None, every cluster's (other kinds of objects too)."""
    return f"{cluster_prefix(cluster)}backups/" if cluster else CLUSTERS


def backup_prefix(cluster: str, backup_id: str) -> str:
    return f"{CLUSTERS}{cluster}/backups/{backup_id}/"


def backup_object_key(cluster: str, backup_id: str, name: str) -> str:
    return backup_prefix(cluster, backup_id) + name


class ObjectKind(Enum):
    """What an object of a backup is to the repository."""

    DATA = "data"
    MANIFEST = "manifest"
    PIN = "pin"


@dataclass(frozen=True)
class BackupObjectName:
    """A key of a backup's object, taken apart: its cluster, backup id and kind."""

    cluster: str
    backup_id: str
    kind: ObjectKind

    @property
    def is_manifest(self) -> bool:
        return self.kind is ObjectKind.MANIFEST

    @property
    def is_pin(self) -> bool:
        return self.kind is ObjectKind.PIN


class Layout(ABC):
    """Where a repository of one format keeps each backup's manifest and pin (its records).

    A backup's data objects are ``backups/<id>/NAME`` in every format; the formats differ only
    in where the records go, which each subclass says once.
    """

    format: ClassVar[int]

    def manifest_key(self, cluster: str, backup_id: str) -> str:
        return self.record_key(cluster, backup_id, ObjectKind.MANIFEST)

    def pin_key(self, cluster: str, backup_id: str) -> str:
        return self.record_key(cluster, backup_id, ObjectKind.PIN)

    @abstractmethod
    def record_key(self, cluster: str, backup_id: str, kind: ObjectKind) -> str:
        """The key of a backup's manifest or pin."""

    @abstractmethod
    def manifests_under(self, cluster: str | None) -> str:
        """A prefix of every manifest key of ``cluster`` (of every cluster when None)."""

    @abstractmethod
    def commit_folders(self, cluster: str) -> tuple[str, ...]:
        """The folders whose listings show every manifest and pin of ``cluster``."""

    def object_folders(self, cluster: str | None) -> tuple[str, ...]:
        """The folders holding every object of ``cluster``'s backups, data objects first."""
        if cluster is None:
            return (backups_prefix(None),)
        # Once each: format 1's records are in the backups' folders already.
        return tuple(dict.fromkeys((backups_prefix(cluster), *self.commit_folders(cluster))))

    def parse(self, key: str) -> BackupObjectName | None:
        """What a key is to a backup (cluster, id, kind), or None when it is no backup's."""
        parts = key.split("/", 4)
        if len(parts) < 4 or parts[0] + "/" != CLUSTERS or not parts[1]:
            return None
        if parts[2] == "backups" and len(parts) == 5 and parts[3] and parts[4]:
            # ``NAME`` may hold further ``/``: lifeboat writes none, but they are still the backup's.
            return BackupObjectName(parts[1], parts[3], self._kind_in_backup_folder(parts[4]))
        if len(parts) != 4:
            return None
        return self._record_outside(parts[1], parts[2] + "/", parts[3])

    @abstractmethod
    def _kind_in_backup_folder(self, name: str) -> ObjectKind:
        """What the object ``backups/<id>/NAME`` is."""

    @abstractmethod
    def _record_outside(self, cluster: str, folder: str, name: str) -> BackupObjectName | None:
        """What ``clusters/<cluster>/<folder>NAME`` is, outside the backups' folders."""


@dataclass(frozen=True)
class RecordsInBackupFolder(Layout):
    """Format 1: the manifest and the pin inside the backup's folder, ``backups/<id>/manifest.json``.

    Every backup's folder is listed to find the manifests, data objects too.
    """

    format: ClassVar[int] = 1
    kinds: ClassVar[dict[str, ObjectKind]] = {MANIFEST_NAME: ObjectKind.MANIFEST, PIN_NAME: ObjectKind.PIN}
    names: ClassVar[dict[ObjectKind, str]] = {kind: name for name, kind in kinds.items()}

    def record_key(self, cluster: str, backup_id: str, kind: ObjectKind) -> str:
        return backup_object_key(cluster, backup_id, self.names[kind])

    def manifests_under(self, cluster: str | None) -> str:
        return backups_prefix(cluster)

    def commit_folders(self, cluster: str) -> tuple[str, ...]:
        return (backups_prefix(cluster),)

    def _kind_in_backup_folder(self, name: str) -> ObjectKind:
        return self.kinds.get(name, ObjectKind.DATA)

    def _record_outside(self, cluster: str, folder: str, name: str) -> BackupObjectName | None:
        return None


@dataclass(frozen=True)
class RecordsInFlatFolders(Layout):
    """Format 2: each manifest ``manifests/<id>.json`` and each pin ``pins/<id>.json``, one flat
    folder of each per cluster."""

    format: ClassVar[int] = 2
    kinds: ClassVar[dict[str, ObjectKind]] = {MANIFESTS_DIR: ObjectKind.MANIFEST, PINS_DIR: ObjectKind.PIN}
    folders: ClassVar[dict[ObjectKind, str]] = {kind: folder for folder, kind in kinds.items()}

    def record_key(self, cluster: str, backup_id: str, kind: ObjectKind) -> str:
        return f"{cluster_prefix(cluster)}{self.folders[kind]}{backup_id}{RECORD_SUFFIX}"

    def manifests_under(self, cluster: str | None) -> str:
        return backups_prefix(None) if cluster is None else manifests_prefix(cluster)

    def commit_folders(self, cluster: str) -> tuple[str, ...]:
        return tuple(cluster_prefix(cluster) + folder for folder in self.folders.values())

    def _kind_in_backup_folder(self, name: str) -> ObjectKind:
        return ObjectKind.DATA

    def _record_outside(self, cluster: str, folder: str, name: str) -> BackupObjectName | None:
        kind = self.kinds.get(folder)
        backup_id = name.removesuffix(RECORD_SUFFIX)
        # A name lifeboat never writes (``notes.json``) is no backup's: listed as a damaged
        # backup, it could never be deleted by id.
        if kind is None or backup_id == name or not is_backup_id(backup_id):
            return None
        return BackupObjectName(cluster, backup_id, kind)


def manifests_prefix(cluster: str) -> str:
    """Format 2: the flat folder of every manifest of ``cluster``."""
    return f"{cluster_prefix(cluster)}{MANIFESTS_DIR}"


LAYOUTS: dict[int, Layout] = {layout.format: layout for layout in (RecordsInBackupFolder(), RecordsInFlatFolders())}
CURRENT_LAYOUT = LAYOUTS[2]


def is_manifest_key_of(key: str, cluster: str, backup_id: str) -> bool:
    """Whether some format keeps the manifest of ``cluster``'s backup ``backup_id`` under ``key``."""
    return any(key == layout.manifest_key(cluster, backup_id) for layout in LAYOUTS.values())


def chains_prefix(cluster: str) -> str:
    """Every capture chain of ``cluster``."""
    return f"{cluster_prefix(cluster)}chains/"


def chain_prefix(cluster: str, chain: str) -> str:
    return f"{chains_prefix(cluster)}{chain}/"


def chain_object_key(cluster: str, chain: str, name: str) -> str:
    """``chain.json``, ``heartbeat.json`` or ``gap.json`` of one chain."""
    return chain_prefix(cluster, chain) + name


def segment_key(cluster: str, chain: str, name: str) -> str:
    return chain_prefix(cluster, chain) + SEGMENTS_DIR + name


def lock_key(cluster: str, name: str) -> str:
    """Reserved: a repository-side lock object of ``cluster`` (none is written yet)."""
    return f"{cluster_prefix(cluster)}locks/{name}.json"

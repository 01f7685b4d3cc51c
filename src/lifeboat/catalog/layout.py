"""Every object name in a lifeboat repository: the one module that spells the layout.

Inside an object store::

    lifeboat-repository.json                               format marker (written once)
    clusters/<cluster>/backups/<id>/snapshot.db.zst[.age]  a backup's data objects
    clusters/<cluster>/backups/<id>/control-plane.tar.zst[.age]
    clusters/<cluster>/backups/<id>/manifest.json          written last, deleted last
    clusters/<cluster>/backups/<id>/pin.json               a pin, only beside a manifest
    clusters/<cluster>/chains/<chain>/...                  continuous capture (see below)
    clusters/<cluster>/locks/<name>.json                   reserved for repository locks

A new kind of stored object gets its prefix and names here, under ``clusters/<cluster>/``,
beside ``backups/``; nothing else builds a key from strings. Continuous capture keeps one
folder per chain (a base backup and the segments after it)::

    clusters/<cluster>/chains/<chain>/chain.json           written once, before the first segment
    clusters/<cluster>/chains/<chain>/segments/<name>      the captured revisions
    clusters/<cluster>/chains/<chain>/heartbeat.json       rewritten while capture is idle
    clusters/<cluster>/chains/<chain>/gap.json             written once when the chain ends
"""

from __future__ import annotations

from dataclasses import dataclass

MARKER_KEY = "lifeboat-repository.json"
CLUSTERS = "clusters/"

# A backup's objects. Stored names add ".zst" and, when encrypted, ".age" (see stored_name).
SNAPSHOT_OBJECT = "snapshot.db"
FILES_OBJECT = "control-plane.tar"
MANIFEST_NAME = "manifest.json"
PIN_NAME = "pin.json"

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


def manifest_key(cluster: str, backup_id: str) -> str:
    return backup_prefix(cluster, backup_id) + MANIFEST_NAME


def pin_key(cluster: str, backup_id: str) -> str:
    return backup_prefix(cluster, backup_id) + PIN_NAME


@dataclass(frozen=True)
class BackupObjectName:
    """A key inside a backup's folder, taken apart."""

    cluster: str
    backup_id: str
    name: str

    @property
    def is_manifest(self) -> bool:
        return self.name == MANIFEST_NAME

    @property
    def is_pin(self) -> bool:
        return self.name == PIN_NAME


def parse_backup_key(key: str) -> BackupObjectName | None:
    """The parts of a key in a backup's folder (``clusters/C/backups/ID/NAME``), else None.

    ``NAME`` may hold further ``/``: lifeboat writes none, but they are still the backup's.
    """
    parts = key.split("/", 4)
    if len(parts) != 5 or parts[0] + "/" != CLUSTERS or parts[2] != "backups":
        return None
    if not (parts[1] and parts[3] and parts[4]):
        return None
    return BackupObjectName(parts[1], parts[3], parts[4])


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

"""The backup manifest: the small JSON object that makes a backup exist.

It is written last (create-only) after every data object is stored, and deleted last. It
records everything needed to check and restore the backup without asking etcd: the source
member, the snapshot's etcdutl-compatible status, the sha256 of the raw snapshot and of every
stored object, the codecs used, and every captured control-plane file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from lifeboat.errors import IntegrityError
from lifeboat.catalog.file_archive import CapturedFile

MANIFEST_FORMAT = 1
Status = Literal["complete", "failed"]


@dataclass(frozen=True)
class SourceMember:
    """The etcd member the snapshot was streamed from, as it described itself."""

    member_id: str  # hex, as etcdctl prints it
    name: str
    endpoint: str
    etcd_version: str
    cluster_id: str  # hex
    raft_term: int
    raft_index: int
    is_leader: bool


@dataclass(frozen=True)
class StoredObject:
    """One immutable object of the backup: its name under the backup prefix and checksums."""

    name: str
    size: int  # bytes as stored (compressed, maybe encrypted)
    sha256: str  # of the stored bytes
    raw_size: int  # bytes before compression
    raw_sha256: str  # of the bytes before compression


@dataclass(frozen=True)
class SnapshotInfo:
    """What the offline reader found in the raw snapshot (same numbers as etcdutl)."""

    revision: int
    hash: int
    total_key: int
    total_size: int
    db_sha256: str  # the trailer etcd appended: sha256 of the db bytes before it


@dataclass(frozen=True)
class Manifest:
    """Everything lifeboat knows about one backup."""

    id: str
    cluster: str
    status: Status
    started_at: str  # RFC 3339, UTC
    finished_at: str
    tool_version: str
    source: SourceMember | None
    snapshot: SnapshotInfo | None
    compression: str  # "zstd:<level>"
    encryption: str | None  # "age" or None
    recipients: tuple[str, ...]  # public age/ssh recipients, never identities
    objects: tuple[StoredObject, ...]
    files: tuple[CapturedFile, ...] = ()  # every captured control-plane file, as on the host
    failure_reason: str | None = None
    format: int = MANIFEST_FORMAT
    labels: dict[str, str] = field(default_factory=dict)

    def object_named(self, prefix: str) -> StoredObject | None:
        """The stored object whose name starts with ``prefix`` ("snapshot", "control-plane")."""
        for obj in self.objects:
            if obj.name.startswith(prefix):
                return obj
        return None

    @property
    def stored_size(self) -> int:
        return sum(o.size for o in self.objects)

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True).encode() + b"\n"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        """Parse a stored manifest; a malformed one is an IntegrityError naming ``where``."""
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict):
                raise TypeError("not an object")
            if raw.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"unsupported manifest format {raw.get('format')!r}")
            return cls._from_dict(raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise IntegrityError(f"manifest {where} is malformed: {exc}") from None

    @classmethod
    def _from_dict(cls, raw: dict[str, Any]) -> Manifest:
        source = raw["source"]
        snapshot = raw["snapshot"]
        return cls(
            id=str(raw["id"]),
            cluster=str(raw["cluster"]),
            status=raw["status"],
            started_at=str(raw["started_at"]),
            finished_at=str(raw["finished_at"]),
            tool_version=str(raw["tool_version"]),
            source=SourceMember(**source) if source is not None else None,
            snapshot=SnapshotInfo(**snapshot) if snapshot is not None else None,
            compression=str(raw["compression"]),
            encryption=raw["encryption"],
            recipients=tuple(raw["recipients"]),
            objects=tuple(StoredObject(**o) for o in raw["objects"]),
            files=tuple(CapturedFile(**f) for f in raw.get("files", ())),
            failure_reason=raw.get("failure_reason"),
            format=int(raw["format"]),
            labels=dict(raw.get("labels", {})),
        )

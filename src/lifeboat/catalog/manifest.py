"""The backup manifest: the small JSON object that makes a backup exist.

It is written last (create-only) after every data object is stored, and deleted last. It
records everything needed to check and restore the backup without asking etcd: the source
member, the snapshot's etcdutl-compatible status, the sha256 of the raw snapshot and of every
stored object, the codecs used, and every captured control-plane file.

One strict schema (pydantic, strict types) both writes and reads it: a manifest whose fields
have the wrong type (``"revision": "eighty"``), an impossible value (``"size": -5``), an unknown
status or a missing field is *damaged*: :meth:`Manifest.from_json` raises an IntegrityError that
names the object and the field, and a listing reports it (:class:`DamagedManifest`) instead of
failing as a whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from lifeboat.config.problems import key_path, translate
from lifeboat.errors import IntegrityError
from lifeboat.catalog.file_archive import CapturedFile
from lifeboat.catalog.layout import SNAPSHOT_OBJECT
from lifeboat.catalog.records import record_json

MANIFEST_FORMAT: Literal[1] = 1


class BackupStatus(StrEnum):
    """What a manifest says about its backup; only ``complete`` backups are listed as usable."""

    COMPLETE = "complete"
    FAILED = "failed"  # reserved by the format for recording failures; lifeboat writes none today


def _rfc3339(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"must be an RFC 3339 time such as 2026-11-22T03:04:05Z, got {text!r}") from None
    if moment.utcoffset() is None:
        raise ValueError(f"must be an RFC 3339 time with a zone (Z), got {text!r}")
    return text


# A data object's name is one segment of its key under the backup's folder: a name that is a
# path (``../x``), or holds a character no store key may, names an object that cannot exist.
_OBJECT_NAME = re.compile(r"[A-Za-z0-9._+=@,:-]{1,255}")


def _object_name(name: str) -> str:
    if name in (".", "..") or not _OBJECT_NAME.fullmatch(name):
        raise ValueError(f"must be one object name (letters, digits and ._+=@,:-), not a path; got {name[:80]!r}")
    return name


Count = Annotated[int, Field(ge=0)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
HexId = Annotated[str, Field(pattern=r"^[0-9a-f]{1,16}$")]  # etcd's 64-bit ids, as etcdctl prints them
Time = Annotated[str, AfterValidator(_rfc3339)]
NonEmpty = Annotated[str, Field(min_length=1)]


class _Record(BaseModel):
    """A part of a manifest: strict types, unknown keys refused, immutable."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class SourceMember(_Record):
    """The etcd member the snapshot was streamed from, as it described itself."""

    member_id: HexId
    name: str
    endpoint: NonEmpty
    etcd_version: NonEmpty
    cluster_id: HexId
    raft_term: Count
    raft_index: Count
    is_leader: bool


class BackupObject(_Record):
    """One immutable object of the backup: its name under the backup prefix and checksums."""

    name: Annotated[str, AfterValidator(_object_name)]
    size: Count  # bytes as stored (compressed, maybe encrypted)
    sha256: Sha256  # of the stored bytes
    raw_size: Count  # bytes before compression
    raw_sha256: Sha256  # of the bytes before compression


class SnapshotInfo(_Record):
    """What the offline reader found in the raw snapshot (same numbers as etcdutl)."""

    revision: Count
    hash: Count
    total_key: Count
    total_size: Count
    db_sha256: Sha256  # the trailer etcd appended: sha256 of the db bytes before it


class Manifest(_Record):
    """Everything lifeboat knows about one backup."""

    id: NonEmpty
    cluster: NonEmpty
    status: BackupStatus
    started_at: Time  # RFC 3339, UTC
    finished_at: Time
    tool_version: str
    source: SourceMember
    snapshot: SnapshotInfo
    compression: Annotated[str, Field(pattern=r"^zstd:[0-9]+$")]
    encryption: Literal["age"] | None  # None: stored unencrypted
    recipients: tuple[str, ...]  # public age/ssh recipients, never identities
    objects: tuple[BackupObject, ...]
    files: tuple[CapturedFile, ...] = ()  # every captured control-plane file, as on the host
    failure_reason: str | None = None  # set only with status "failed"
    format: Literal[1] = MANIFEST_FORMAT
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_a_snapshot(self) -> Manifest:
        if self.object_named(SNAPSHOT_OBJECT) is None:
            raise ValueError(f"objects: names no {SNAPSHOT_OBJECT} object")
        return self

    def object_named(self, prefix: str) -> BackupObject | None:
        """The stored object whose name starts with ``prefix`` ("snapshot", "control-plane")."""
        for obj in self.objects:
            if obj.name.startswith(prefix):
                return obj
        return None

    @property
    def stored_size(self) -> int:
        return sum(o.size for o in self.objects)

    def to_json(self) -> bytes:
        return record_json(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The manifest as stored: plain JSON types."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        """Parse a stored manifest; a damaged one is an IntegrityError naming ``where`` and the field."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise IntegrityError(f"manifest {where} is damaged: {_problems(exc)}") from None


def _problems(exc: ValidationError) -> str:
    errors = exc.errors()
    if len(errors) == 1 and errors[0]["type"] == "json_invalid":
        return f"not valid JSON ({errors[0].get('ctx', {}).get('error', 'truncated?')})"
    return translate(exc, lambda loc: key_path(loc) or "the document")


@dataclass(frozen=True)
class BackupSummary:
    """What a listing shows of one backup: its manifest without the captured files, and their count.

    ``manifest.files`` is always empty here (a kubeadm node's 30 file records are most of a
    manifest's bytes; a listing shows only how many there are): read the manifest itself
    (:meth:`~lifeboat.catalog.repository.BackupRepository.find`) for the files.
    """

    manifest: Manifest
    files: int  # how many control-plane files the backup holds

    @classmethod
    def of(cls, manifest: Manifest) -> BackupSummary:
        return cls(manifest.model_copy(update={"files": ()}), len(manifest.files))

    @property
    def cluster(self) -> str:
        return self.manifest.cluster

    @property
    def id(self) -> str:
        return self.manifest.id


@dataclass(frozen=True)
class DamagedManifest:
    """A manifest that exists but cannot be read: its backup is listed as damaged, never used."""

    cluster: str
    id: str
    key: str  # the manifest's object key
    reason: str

"""The sha256 trailer etcd appends to a snapshot stream.

etcd's ``Maintenance.Snapshot`` sends the backend db followed by the sha256 of those bytes;
``etcdctl snapshot save`` keeps it, so a saved file has ``size % 512 == 32``. etcd's restore
recognises the trailer by exactly that size rule (etcdutl/snapshot/v3_snapshot.go).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from lifeboat.errors import IntegrityError, SnapshotFormatError

from .mapping import translated_faults

TRAILER_SIZE = 32
_CHUNK = 8 << 20


def has_trailer_length(file_size: int) -> bool:
    """Whether a file of this size carries etcd's sha256 trailer (etcd's own rule)."""
    return file_size > TRAILER_SIZE and file_size % 512 == TRAILER_SIZE


@dataclass(frozen=True)
class TrailerCheck:
    """The result of checking a snapshot's sha256 trailer."""

    present: bool
    matches: bool | None
    db_size: int
    db_sha256: str
    recorded_sha256: str | None

    def require_match(self, path: str | os.PathLike[str]) -> None:
        """Raise :class:`IntegrityError` unless the trailer is present and matches."""
        if not self.present:
            raise IntegrityError(
                f"{path}: has no sha256 trailer (size % 512 != 32); it is not a complete "
                "`etcdctl snapshot save` file, take the snapshot again"
            )
        if not self.matches:
            raise IntegrityError(
                f"{path}: sha256 of the database does not match the snapshot's trailer; "
                "the file is corrupted or incomplete, use another copy"
            )


def check_trailer(path: str | os.PathLike[str]) -> TrailerCheck:
    """Hash the database part of ``path`` and compare it with the trailer, if there is one."""
    p = Path(path)
    digest = hashlib.sha256()
    recorded = None
    with translated_faults(p), p.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        present = has_trailer_length(size)
        db_size = size - TRAILER_SIZE if present else size
        left = db_size
        while left:
            # Plain reads, never a map: a file that shrinks while hashed is a short read here.
            chunk = f.read(min(_CHUNK, left))
            if not chunk:
                raise SnapshotFormatError(f"{p}: the file shrank while it was hashed; read a copy that "
                                          "nothing writes to")
            digest.update(chunk)
            left -= len(chunk)
        if present:
            recorded = f.read(TRAILER_SIZE).hex()
    actual = digest.hexdigest()
    return TrailerCheck(
        present=present,
        matches=(actual == recorded) if present else None,
        db_size=db_size,
        db_sha256=actual,
        recorded_sha256=recorded,
    )

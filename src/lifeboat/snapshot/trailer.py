"""The sha256 trailer etcd appends to a snapshot stream.

etcd's ``Maintenance.Snapshot`` sends the backend db followed by the sha256 of those bytes;
``etcdctl snapshot save`` keeps it, so a saved file has ``size % 512 == 32``. etcd's restore
recognises the trailer by exactly that size rule (etcdutl/snapshot/v3_snapshot.go).
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifeboat.errors import IntegrityError, SnapshotFormatError
from lifeboat.regular_files import open_regular

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
    with translated_faults(p), os.fdopen(open_regular(p, "snapshot file"), "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        present = has_trailer_length(size)
        db_size = size - TRAILER_SIZE if present else size
        # Plain reads, never a map: a file that shrinks while hashed is a short read here.
        with memoryview(bytearray(min(_CHUNK, max(db_size, 2)))) as buffer:
            try:
                hash_range(digest, f, 0, db_size, buffer)
            except SnapshotFormatError:
                raise SnapshotFormatError(f"{p}: the file shrank while it was hashed; read a copy that "
                                          "nothing writes to") from None
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


def hash_range(digest: Any, f: io.FileIO, start: int, end: int, buffer: memoryview) -> None:
    """Hash ``f``'s bytes from ``start`` to ``end``, read into ``buffer`` (overwritten).

    One half of ``buffer`` is read in a thread while the other is hashed: the read (a copy out
    of the page cache) and sha256 both release the GIL, so on two cores a 1 GB db is hashed in
    about the time of its sha256 alone, not of both one after the other."""
    f.seek(start)
    half = len(buffer) // 2
    sizes = [min(half, end - at) for at in range(start, end, half or 1)]
    if len(sizes) <= 1:
        for size in sizes:
            digest.update(buffer[:read_exactly(f, buffer[:size])])
        return
    halves = (buffer[:half], buffer[half:2 * half])
    with ThreadPoolExecutor(1, thread_name_prefix="lifeboat-read") as pool:
        # One read in flight at a time, so each continues in the file where the last one ended.
        reading = pool.submit(read_exactly, f, halves[0][:sizes[0]])
        for i in range(len(sizes)):
            got = reading.result()
            if i + 1 < len(sizes):
                reading = pool.submit(read_exactly, f, halves[(i + 1) % 2][:sizes[i + 1]])
            digest.update(halves[i % 2][:got])


def read_exactly(f: io.FileIO, into: memoryview) -> int:
    """Fill ``into`` from ``f``; its size. A file that ends first shrank while it was read."""
    done = 0
    while done < len(into):
        got = f.readinto(into[done:])
        if not got:
            raise SnapshotFormatError(f"{f.name}: shrank while it was being read")
        done += got
    return done

"""Version 3 segments re-encoded with changed records: every check a writer can satisfy holds
(zstd frames with checksums, index, counts, sha256 end line), what the records say does not."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import zstandard

from lifeboat.catalog.segment_index import CREATED, DELETED, IndexEntry, encode_index
from lifeboat.catalog.segment_records import DELETE, HEAD, HEAD_SIZE, iter_records, key_of
from lifeboat.catalog.segments import _frames
from lifeboat.snapshot.mvcc import decode_key_value


@dataclass(frozen=True)
class Record:
    main: int
    sub: int
    kind: bytes
    lease: int
    value: bytes

    @property
    def key(self) -> bytes:
        return key_of(self.value, 0, len(self.value))


def read_records(stored: bytes) -> tuple[dict[str, object], list[Record]]:
    """An unencrypted version 3 segment's header (as JSON) and records."""
    raw = b"".join(_frames_of(stored))
    line, _, after = raw.partition(b"\n")
    header = json.loads(line)
    index_bytes = header["index"]["bytes"]
    body = after[index_bytes:index_bytes + header["index"]["records_bytes"]]
    records = [Record(main, sub, kind, lease, bytes(body[start:end]))
               for main, sub, kind, lease, start, end in iter_records(body)]
    return header, records


def _frames_of(stored: bytes) -> list[bytes]:
    frames, data = [], stored
    while data:
        frame = zstandard.ZstdDecompressor().decompressobj()
        frames.append(frame.decompress(data))
        data = frame.unused_data
    return frames


def encoded(header: dict[str, object], records: list[Record]) -> bytes:
    """The stored bytes (two zstd frames with checksums) of ``records`` under ``header``, whose
    counts, index and end line are made to match them."""
    entries: list[IndexEntry] = []
    parts: list[bytes] = []
    offset = 0
    for r in records:
        head = HEAD.pack(r.main, b"_", r.sub, r.kind, r.lease, len(r.value))
        deleted = r.kind == DELETE
        flags = DELETED if deleted else CREATED if decode_key_value(r.value, 0, len(r.value)).version == 1 else 0
        entries.append(IndexEntry(r.main, offset, r.lease, r.key, flags))
        parts += (head, r.value)
        offset += HEAD_SIZE + len(r.value)
    fields = {k: v for k, v in header.items() if k != "index"}
    fields["revisions"] = len({r.main for r in records})
    fields["events"] = len(records)
    first, second = _frames(fields, encode_index(entries), parts)
    compressor = zstandard.ZstdCompressor(write_checksum=True, write_content_size=True)
    return compressor.compress(first) + compressor.compress(second)


def forge(path: Path, change: Callable[[list[Record]], list[Record]]) -> None:
    """Rewrite the stored segment at ``path`` with ``change`` applied to its records."""
    header, records = read_records(path.read_bytes())
    path.write_bytes(encoded(header, change(records)))


__all__ = ["Record", "encoded", "forge", "read_records", "replace"]

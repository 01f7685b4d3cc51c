"""Segments as lifeboat wrote them before version 3 (records without an index), for tests of
the readers that still read them."""

from __future__ import annotations

import hashlib
import json

from lifeboat.catalog.segments import Segment, encode_segment_frames


def encode_segment_v2(segment: Segment) -> bytes:
    """``segment``'s raw bytes in format version 2: the version 3 bytes without the index."""
    first, rest = encode_segment_frames(segment)
    line_end = first.index(b"\n") + 1
    header = json.loads(first[:line_end])
    del header["index"]
    header["version"] = 2
    records = rest[: rest.rstrip(b"\n").rfind(b"\n") + 1]  # the records and their newline
    content = json.dumps(header, separators=(",", ":")).encode() + b"\n" + records
    end = json.dumps({"end": {"sha256": hashlib.sha256(content).hexdigest()}}, separators=(",", ":")).encode()
    return content + end + b"\n"

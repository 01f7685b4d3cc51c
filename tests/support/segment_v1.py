"""Segments as lifeboat wrote them before format version 2 (JSON lines), for reading tests.

Repositories hold such segments; every lifeboat must still read them. This writer is what
capture wrote then, kept here (not in lifeboat) because lifeboat no longer writes them.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from lifeboat.catalog.segments import Segment, header_fields, seen_text
from lifeboat.etcdapi.model import WatchEvent


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _event_json(event: WatchEvent) -> dict[str, Any]:
    kv = event.kv
    return {
        "type": event.type.value, "key": _b64(kv.key), "value": _b64(kv.value),
        "create_revision": kv.create_revision, "mod_revision": kv.mod_revision,
        "version": kv.version, "lease": kv.lease,
    }


def encode_segment_v1(segment: Segment) -> bytes:
    """The raw bytes of ``segment`` in format version 1."""
    header = {**header_fields(segment), "version": 1}
    lines = [json.dumps(header, separators=(",", ":"))]
    for rev in segment.revisions:
        lines.append(json.dumps({
            "revision": rev.revision, "seen": seen_text(rev.seen),
            "events": [_event_json(e) for e in rev.events],
        }, separators=(",", ":")))
    body = ("\n".join(lines) + "\n").encode()
    end = json.dumps({"end": {"sha256": hashlib.sha256(body).hexdigest()}}, separators=(",", ":"))
    return body + end.encode() + b"\n"


def v1_name(v2_name: str) -> str:
    """The object name version 1 gave the segment ``v2_name`` names."""
    return v2_name.replace(".seg.zst", ".jsonl.zst")

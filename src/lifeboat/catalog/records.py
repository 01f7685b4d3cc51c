"""How lifeboat writes and reads its small JSON records (manifests, pins, chains, restore journals).

A module of its own, without pydantic, so that reading capture chains (the chain survey's
child process) does not import the manifest's model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lifeboat.errors import IntegrityError
from lifeboat.store.base import ObjectStore

# The most bytes each record is read to: far above any real one (a manifest of a node with
# thousands of captured files is well under 1 MiB), so that a planted or damaged multi-gigabyte
# "record" is reported damaged instead of read into memory by list, prune or timeline.
MANIFEST_MAX = 32 << 20
SMALL_RECORD_MAX = 1 << 20  # pins, deletion claims, the repository marker, chain.json, gap.json, heartbeats


def record_json(fields: Mapping[str, Any]) -> bytes:
    """A small record (manifest, pin, chain, restore journal) as written: indented JSON, keys sorted, one newline."""
    return json.dumps(fields, indent=2, sort_keys=True).encode() + b"\n"


def read_record(store: ObjectStore, key: str, limit: int, what: str) -> bytes:
    """The bytes of the record ``key`` (NotFound when absent); one larger than ``limit`` is an
    IntegrityError, read no further than that and never quoted."""
    data = store.get_range(key, 0, limit + 1)
    if len(data) > limit:
        raise IntegrityError(f"{what} {store.url}/{key} is damaged: larger than {limit:,} bytes, far more "
                             "than any real one; it was not read")
    return bytes(data)

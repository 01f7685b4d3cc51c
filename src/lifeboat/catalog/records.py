"""How lifeboat writes its small JSON records (manifests, pins, chains, restore journals).

A module of its own, without pydantic, so that reading capture chains (the chain survey's
child process) does not import the manifest's model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def record_json(fields: Mapping[str, Any]) -> bytes:
    """A small record (manifest, pin, chain, restore journal) as written: indented JSON, keys sorted, one newline."""
    return json.dumps(fields, indent=2, sort_keys=True).encode() + b"\n"

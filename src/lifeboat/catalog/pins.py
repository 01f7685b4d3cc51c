"""Pins: a small object per pinned backup (see :mod:`.layout`) that retention never deletes.

Manifests are immutable (written once, create-only), so a pin cannot be a manifest field.
A pin is only written for a backup whose manifest exists; deleting a backup removes its
pin after the data objects, before the manifest.
"""

from __future__ import annotations

import getpass
import json
import socket
from dataclasses import asdict, dataclass
from datetime import UTC

from lifeboat.catalog.records import record_json
from lifeboat.clock import Clock, SystemClock
from lifeboat.errors import IntegrityError

@dataclass(frozen=True)
class Pin:
    """Who pinned a backup, when (RFC 3339 UTC) and why."""

    pinned_at: str
    pinned_by: str
    reason: str = ""

    @classmethod
    def now(cls, reason: str = "", *, clock: Clock | None = None) -> Pin:
        """A pin by the current user on this host, at the clock's wall time."""
        moment = (clock or SystemClock()).now().astimezone(UTC)
        try:
            user = getpass.getuser()
        except (OSError, KeyError):
            user = "unknown"
        return cls(moment.isoformat(timespec="seconds"), f"{user}@{socket.gethostname()}", reason)

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Pin:
        try:
            raw = json.loads(data)
            return cls(str(raw["pinned_at"]), str(raw["pinned_by"]), str(raw.get("reason", "")))
        except (ValueError, TypeError, KeyError) as exc:
            raise IntegrityError(f"pin {where} is malformed: {exc}") from None

    def to_json(self) -> bytes:
        return record_json(asdict(self))

    @classmethod
    def read(cls, data: bytes, where: str) -> Pin:
        """The pin in ``data``; a damaged one still pins its backup, saying it is damaged.

        Someone meant to keep that backup: retention must not delete it, and one bad pin must
        not stop listing or pruning the rest. ``lifeboat unpin`` removes it.
        """
        try:
            return cls.from_json(data, where)
        except IntegrityError as exc:
            return cls("unknown", "unknown", f"{exc}; still treated as pinned until 'lifeboat unpin' removes it")

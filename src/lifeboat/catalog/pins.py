"""Pins: a small object per pinned backup (see :mod:`.layout`) that retention never deletes.

Manifests are immutable (written once, create-only), so a pin cannot be a manifest field.
A prune that deletes a backup first writes a :class:`DeletionClaim` where its pin would be,
create-only: a pin written first makes the prune skip the backup, a claim written first makes
``lifeboat pin`` refuse it, and a second prune leaves it to the first. Deleting a backup removes
its data objects, then its manifest, and its pin or claim last; a pin written once the claim is
gone finds no manifest and is taken back. An older lifeboat reads a claim as a damaged pin, which
keeps the backup.
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

_CLAIMED_AT = "deleting_since"

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
            return cls.damaged(exc)

    @classmethod
    def damaged(cls, problem: IntegrityError) -> Pin:
        """The pin of a backup whose pin is there but damaged (``problem``): it still pins it."""
        return cls("unknown", "unknown", f"{problem}; still treated as pinned until 'lifeboat unpin' removes it")


@dataclass(frozen=True)
class DeletionClaim:
    """A prune deleting the backup: since when (RFC 3339 UTC) and who runs it."""

    deleting_since: str
    deleting_by: str

    @classmethod
    def now(cls, *, clock: Clock | None = None) -> DeletionClaim:
        pin = Pin.now(clock=clock)
        return cls(pin.pinned_at, pin.pinned_by)

    def to_json(self) -> bytes:
        return record_json(asdict(self))


def read_pin_record(data: bytes, where: str) -> Pin | DeletionClaim:
    """What a pin's key holds: a pin (a damaged one too, see :meth:`Pin.read`) or a prune's claim."""
    try:
        raw = json.loads(data)
    except ValueError:
        raw = None
    if isinstance(raw, dict) and _CLAIMED_AT in raw and "pinned_at" not in raw:
        return DeletionClaim(str(raw[_CLAIMED_AT]), str(raw.get("deleting_by", "")))
    return Pin.read(data, where)

"""What retention needs to know about one backup."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from lifeboat.errors import OperationFailed

COMPLETE = "complete"
# A complete backup's status while objects its manifest lists are missing from the store (or
# of another size): not counted as kept by the policies, nor deleted for being incomplete.
DAMAGED = "damaged"


@dataclass(frozen=True, slots=True)
class BackupRecord:
    """One backup as the catalog lists it.

    ``status`` is open-ended ("complete", "failed", "in-progress", ...): only
    ``"complete"`` counts as a usable backup. ``taken_at`` must be timezone-aware;
    it is stored in UTC, the zone every calendar period is counted in.
    """

    id: str
    cluster: str
    taken_at: datetime
    status: str
    pinned: bool = False
    size: int = 0

    def __post_init__(self) -> None:
        if self.taken_at.utcoffset() is None:
            raise OperationFailed(
                f"backup {self.cluster}/{self.id} has a taken_at without a time zone "
                f"({self.taken_at.isoformat()}); the manifest must record UTC times"
            )
        object.__setattr__(self, "taken_at", self.taken_at.astimezone(UTC))

    @property
    def is_complete(self) -> bool:
        return self.status == COMPLETE


def format_time(moment: datetime) -> str:
    """``2026-11-20T14:05:00Z``: how retention reasons show an instant."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

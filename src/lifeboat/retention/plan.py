"""The result of retention: a verdict with reasons for every backup."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from lifeboat.retention.records import BackupRecord, format_time


class Verdict(StrEnum):
    KEEP = "keep"
    DELETE = "delete"


@dataclass(frozen=True)
class BackupDecision:
    """What happens to one backup, and every reason for it (never empty)."""

    backup: BackupRecord
    verdict: Verdict
    reasons: tuple[str, ...]

    @property
    def reason(self) -> str:
        """``kept: pinned; newest 7 (keep-last 7)`` — one line for ``prune --dry-run``."""
        word = "kept" if self.verdict is Verdict.KEEP else "deleted"
        return f"{word}: {'; '.join(self.reasons)}"

    def as_dict(self) -> dict[str, object]:
        """The decision as plain JSON-ready data, for ``-o json``."""
        return {
            "id": self.backup.id,
            "cluster": self.backup.cluster,
            "taken_at": format_time(self.backup.taken_at),
            "status": self.backup.status,
            "pinned": self.backup.pinned,
            "size": self.backup.size,
            "verdict": self.verdict.value,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class RetentionPlan:
    """One decision per backup, newest first; the prune executor deletes ``to_delete``."""

    now: datetime
    policies: tuple[str, ...]
    min_redundancy: int
    decisions: tuple[BackupDecision, ...]

    @property
    def to_keep(self) -> tuple[BackupRecord, ...]:
        return tuple(d.backup for d in self.decisions if d.verdict is Verdict.KEEP)

    @property
    def to_delete(self) -> tuple[BackupRecord, ...]:
        return tuple(d.backup for d in self.decisions if d.verdict is Verdict.DELETE)

    @property
    def bytes_to_free(self) -> int:
        return sum(backup.size for backup in self.to_delete)

    def summary(self) -> str:
        """``keep 9, delete 4 (1234 bytes) under keep-last=7, keep-daily=7; min redundancy 1``."""
        return (
            f"keep {len(self.to_keep)}, delete {len(self.to_delete)} "
            f"({self.bytes_to_free} bytes) under {', '.join(self.policies)}; "
            f"min redundancy {self.min_redundancy}"
        )

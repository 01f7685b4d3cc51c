"""The restore journal: which steps of a restore finished, kept beside the data dir.

``<data-dir>.lifeboat-restore.json`` is rewritten after every finished step (written to a
temporary file, fsynced, renamed over the old one, directory fsynced), so after a crash it
names exactly the steps whose effects are on disk. Re-running the same restore skips them;
``--rollback`` reads it to find the data dir that was moved aside.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lifeboat.durable import fsync_dir
from lifeboat.errors import OperationFailed, UsageError

JOURNAL_FORMAT = 1


def journal_path(data_dir: Path) -> Path:
    return data_dir.with_name(data_dir.name + ".lifeboat-restore.json")


@dataclass(frozen=True)
class Journal:
    """What one restore (and a rollback of it) has done so far."""

    backup_id: str
    cluster: str
    data_dir: str
    name: str
    initial_cluster: str
    token: str
    stamp: str  # UTC, the moment the restore was planned; names the moved-aside dir
    done: tuple[str, ...] = ()
    state: dict[str, Any] = field(default_factory=dict)
    finished: bool = False
    rollback_stamp: str | None = None
    rollback_done: tuple[str, ...] = ()
    rolled_back: bool = False
    # Set (and saved) before the first step that changes the node runs; until then the restore
    # only read and downloaded, and its journal blocks nothing (see ``unfinished``).
    node_changed: bool = False
    format: int = JOURNAL_FORMAT

    @property
    def unfinished(self) -> bool:
        """A restore that changed the node and neither finished nor was rolled back: resume or roll it back."""
        return self.node_changed and not self.finished and not self.rolled_back

    def with_done(self, step_key: str, rollback: bool = False) -> Journal:
        if rollback:
            return replace(self, rollback_done=(*self.rollback_done, step_key))
        return replace(self, done=(*self.done, step_key))

    def with_state(self, **values: Any) -> Journal:
        return replace(self, state={**self.state, **values})

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode() + b"\n"


def load_journal(path: Path) -> Journal | None:
    """The journal at ``path``; None if there is none. A damaged one is an error, never ignored."""
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"restore journal {path} is unreadable ({exc}); inspect it, or move it away "
                         "to start over (the moved-aside data dir it names stays where it is)") from None
    try:
        if raw.get("format") != JOURNAL_FORMAT:
            raise ValueError(f"format {raw.get('format')!r}")
        raw["done"] = tuple(raw["done"])
        raw["rollback_done"] = tuple(raw.get("rollback_done", ()))
        # A journal from before node_changed was recorded: assume the restore changed the node.
        raw.setdefault("node_changed", True)
        return Journal(**raw)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"restore journal {path} is not one this lifeboat wrote ({exc}); "
                         "move it away to start over") from None


def save_journal(path: Path, journal: Journal) -> None:
    """Replace the journal atomically and durably."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(journal.to_json())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise OperationFailed(f"cannot write the restore journal {path}: {exc.strerror}; "
                              "check that directory's space and permissions") from None

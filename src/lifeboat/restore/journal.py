"""The restore journal: which steps of a restore finished, kept beside the data dir.

``<data-dir>.lifeboat-restore.json`` is rewritten after every finished step (written to a
temporary file, fsynced, renamed over the old one, directory fsynced), so after a crash it
names exactly the steps whose effects are on disk. Re-running the same restore skips them;
``--rollback`` reads it to find the data dir that was moved aside.

One strict schema (pydantic, like the manifest's) writes and reads it: a journal with a wrong
type, an unknown key or a missing field is refused naming the field, never half-used.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from dataclasses import asdict, field, replace
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from pydantic.dataclasses import dataclass
from typing_extensions import TypedDict  # pydantic validates only this one on Python < 3.12

from lifeboat.catalog.records import record_json
from lifeboat.config.problems import key_path, translate
from lifeboat.durable import replace_durably
from lifeboat.disk import no_room_left
from lifeboat.errors import NoRoom, OperationFailed, UsageError

JOURNAL_FORMAT: Literal[1] = 1



def journal_path(data_dir: Path) -> Path:
    return data_dir.with_name(data_dir.name + ".lifeboat-restore.json")


@with_config(ConfigDict(strict=True, extra="forbid"))
class JournalState(TypedDict, total=False):
    """What steps remember; a key is absent until its step ran."""

    moved_aside: str | None  # where the old data dir went; None: there was none to move
    restored_set_aside: str | None  # a rollback's: where the restored data dir went
    owner_uid: int  # the old data dir's owner, given to the restored one
    owner_gid: int


PathField = Literal["moved_aside", "restored_set_aside"]


@dataclass(frozen=True, config=ConfigDict(strict=True, extra="forbid"))
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
    state: JournalState = field(default_factory=lambda: JournalState())
    finished: bool = False
    rollback_stamp: str | None = None
    rollback_done: tuple[str, ...] = ()
    rolled_back: bool = False
    # Set (and saved) before the first step that changes the node runs; until then the restore
    # only read and downloaded, and its journal blocks nothing (see ``unfinished``).
    node_changed: bool = False
    format: Literal[1] = JOURNAL_FORMAT
    # --to-revision/--to-time: the revision the base is replayed to; None: the backup as it is.
    # Its fetched snapshot is replayed in place, so only the same point can resume it.
    point_revision: int | None = None

    @property
    def unfinished(self) -> bool:
        """A restore that changed the node and neither finished nor was rolled back: resume or roll it back."""
        return self.node_changed and not self.finished and not self.rolled_back

    def resume_hint(self, path: Path) -> str:
        """Why a restore asked for something else cannot start, and how to resume this one."""
        flags = f"{self.backup_id}" + (f" --to-revision {self.point_revision}" if self.point_revision is not None else "")
        return (f"an unfinished restore of backup {self._what()} is journaled in {path}; re-run with {flags} "
                "to resume it, or roll it back with --rollback")

    def _what(self) -> str:
        return self.backup_id + (f" to revision {self.point_revision}" if self.point_revision is not None else "")

    def gone_hint(self, path: Path) -> str:
        """How to go on when this unfinished restore's backup (or the capture it replays) is gone."""
        return (f"the unfinished restore of backup {self._what()} journaled in {path} cannot go on: put the node "
                "back as it was with 'lifeboat restore --rollback', then restore again from a backup in the repository")

    def with_done(self, step_key: str, rollback: bool = False) -> Journal:
        if rollback:
            return replace(self, rollback_done=(*self.rollback_done, step_key))
        return replace(self, done=(*self.done, step_key))

    def with_state(self, changes: JournalState) -> Journal:
        merged: JournalState = {**self.state, **changes}
        return replace(self, state=merged)

    def with_path(self, name: PathField, path: str | None) -> Journal:
        """Remember where a step moved a data dir (None: there was nothing to move)."""
        changes: JournalState = {"moved_aside": path} if name == "moved_aside" else {"restored_set_aside": path}
        return self.with_state(changes)

    def to_json(self) -> bytes:
        return record_json(asdict(self))


def load_journal(path: Path) -> Journal | None:
    """The journal at ``path``, to report it; None if there is none. A damaged one is an error,
    never ignored; so is one lifeboat could not have written, run as root or as this user: a
    symlink, a FIFO (it would hang the reader), another user's or one others may write (its
    text would be printed as lifeboat's own)."""
    read = _read(path, os.O_RDONLY | os.O_NOFOLLOW)
    if read is None:
        return None
    _require_private(path, read[1], {0, os.geteuid()})
    return _parsed(path, read[0])


def load_own_journal(path: Path, data_dir: Path) -> Journal | None:
    """The journal of a restore or rollback of ``data_dir`` about to act on it; None if there is none.

    Its renames follow the journal, and whoever may write the data dir's parent could plant one
    there: only a journal lifeboat itself wrote is acted on. It is a regular file (not a symlink,
    one link), owned by the user running lifeboat and writable by nobody else, and every path it
    names is one lifeboat makes beside ``data_dir``; anything else is a UsageError.
    """
    read = _read(path, os.O_RDONLY | os.O_NOFOLLOW)
    if read is None:
        return None
    data, st = read
    if st.st_nlink != 1:
        raise _not_own(path, "it has another name too (a hard link)")
    _require_private(path, st, {os.geteuid()})
    journal = _parsed(path, data)
    _require_own_names(path, journal, data_dir)
    return journal


def _require_private(path: Path, st: os.stat_result, owners: set[int]) -> None:
    if st.st_uid not in owners:
        raise _not_own(path, f"it belongs to uid {st.st_uid}, not to uid {os.geteuid()} running lifeboat")
    if st.st_mode & 0o022:
        raise _not_own(path, f"others may write it (mode {stat.S_IMODE(st.st_mode):04o})")


def _read(path: Path, flags: int) -> tuple[bytes, os.stat_result] | None:
    """The bytes of the regular file at ``path`` and its status; None if there is none."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP and flags & os.O_NOFOLLOW:
            raise _not_own(path, "it is a symlink") from None
        raise _unreadable(path, exc) from None
    with os.fdopen(fd, "rb") as file:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_own(path, "it is not a regular file")
        try:
            data = file.read(_MAX_JOURNAL_BYTES + 1)
        except OSError as exc:
            raise _unreadable(path, exc) from None
    if len(data) > _MAX_JOURNAL_BYTES:
        raise _not_own(path, f"it is larger than {_MAX_JOURNAL_BYTES} bytes")
    return data, st


_MAX_JOURNAL_BYTES = 1 << 20  # a journal is a few KiB
_STAMP = re.compile(r"[0-9]{8}T[0-9]{6}Z(-[0-9]+)?")  # etcd.data_dir.unused_stamp


def _require_own_names(path: Path, journal: Journal, data_dir: Path) -> None:
    for what, stamp in (("stamp", journal.stamp), ("rollback_stamp", journal.rollback_stamp)):
        if stamp is not None and not _STAMP.fullmatch(stamp):
            raise _not_own(path, f"its {what} {stamp!r} is not one lifeboat makes")
    named: tuple[tuple[PathField, str | None, str, str | None], ...] = (
        ("moved_aside", journal.state.get("moved_aside"), "moved", journal.stamp),
        ("restored_set_aside", journal.state.get("restored_set_aside"), "restored", journal.rollback_stamp))
    for field_name, there, kind, stamp in named:
        if there is None:
            continue
        expected = data_dir.with_name(f"{data_dir.name}.lifeboat-{kind}-{stamp}")
        if not same_place(Path(there), expected):
            raise _not_own(path, f"its {field_name} is {there}, not {expected}")


def lexical_path(path: Path) -> Path:
    """``path`` spelled one way, without asking the filesystem: no ``.``, doubled or trailing
    ``/`` (``Path`` drops those), and no leading ``//`` (which ``Path`` keeps). ``..`` stays:
    after a symlink it names another directory."""
    text = str(path)
    return Path("/" + text.lstrip("/")) if text.startswith("//") else path


def same_place(named: Path, expected: Path) -> bool:
    """Whether ``named`` is ``expected``: the same name in the same directory, however spelled
    (another spelling of the directory, or a symlink to it)."""
    if named.name != expected.name:
        return False
    if lexical_path(named.parent) == lexical_path(expected.parent):
        return True
    try:
        return os.path.samefile(named.parent, expected.parent)
    except OSError:
        return False


def _not_own(path: Path, why: str) -> UsageError:
    return UsageError(f"restore journal {path} is not one lifeboat wrote for this data dir ({why}); lifeboat "
                      "does not act on it: find out who put it there, then move it away (nothing it names is touched)")


def _unreadable(path: Path, exc: Exception) -> UsageError:
    return UsageError(f"restore journal {path} is unreadable ({exc}); inspect it, or move it away "
                      "to start over (the moved-aside data dir it names stays where it is)")


def _parsed(path: Path, data: bytes) -> Journal:
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise _unreadable(path, exc) from None
    if isinstance(raw, dict):
        # A journal from before these were recorded: assume the restore changed the node.
        raw.setdefault("node_changed", True)
        raw.setdefault("rollback_done", [])
    try:
        return _SCHEMA.validate_json(json.dumps(raw))
    except ValidationError as exc:
        problems = translate(exc, lambda loc: key_path(loc) or "the document")
        raise UsageError(f"restore journal {path} is not one this lifeboat wrote ({problems}); "
                         "move it away to start over") from None


_SCHEMA = TypeAdapter(Journal)


def save_journal(path: Path, journal: Journal) -> None:
    """Replace the journal atomically and durably."""
    try:
        replace_durably(path, journal.to_json())
    except OSError as exc:
        full = no_room_left(exc, "re-run the same command")
        if full is not None:
            raise NoRoom(f"cannot write the restore journal {path}: {full}") from None
        raise OperationFailed(f"cannot write the restore journal {path}: {exc.strerror}; "
                              "check that directory's space and permissions") from None

"""A replay kept as a record instead of a new trailer, and the member db committed into it.

The replay of a point-in-time restore (``commit_in_place`` with a record) hashes only the pages
it appends; the commit of the member db (``commit_member_db`` with the record) checks the base's
bytes against the base's trailer and the appended ones against the record, in one pass.
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from lifeboat.errors import IntegrityError
from lifeboat.restore.content import newest_revision
from lifeboat.restore.native import commit_record, replay_record, replayed_into, undo_commit
from lifeboat.restore.steps import _require_fetched_intact
from lifeboat.snapshot import check_trailer
from lifeboat.snapshot import writer as writer_module
from lifeboat.snapshot.bbolt import BoltFile
from lifeboat.snapshot.writer import (
    BucketChanges, Overwritten, Replayed, bump_revision, commit_in_place, commit_member_db, replayed_difference,
)
from tests.integration.test_snapshot_writer import (  # noqa: F401 (fixtures)
    KEY, META, _member_changes, etcd_shaped, made_etcd_shaped, rev, sha256,
)
from tests.integration.test_point_in_time import flip_byte

pytestmark = pytest.mark.integration


def _replay_changes(snapshot: Path) -> list[BucketChanges]:
    first = newest_revision(snapshot) + 1
    appended = [(rev(first + i), b"\x0a\x02ap" + b"r" * (i * 31 % 3000)) for i in range(3_000)]
    return [BucketChanges(KEY, appends=appended), BucketChanges(META, puts={b"finishedCompactRev": rev(first)})]


def _keeping(snapshot: Path) -> Any:
    def keep(replayed: Replayed) -> None:
        replay_record(snapshot).write_bytes(replayed.to_json())
    return keep


def _committing(snapshot: Path) -> Any:
    def record(before: Overwritten) -> None:
        commit_record(snapshot).write_bytes(before.to_json())
    return record


@pytest.fixture
def base(etcd_shaped: Path, tmp_path: Path) -> Path:
    """A fetched and checked base snapshot (with etcd's trailer) in a work dir."""
    return bump_revision(etcd_shaped, tmp_path / "snapshot.db", 1).written.path


def _replayed(base: Path) -> Replayed:
    commit_in_place(base, _replay_changes(base), record=_keeping(base))
    return Replayed.from_json(replay_record(base).read_bytes())


def _txid(path: Path) -> int:
    with BoltFile.open(path) as db:
        return db.meta.txid


def test_a_replay_kept_as_a_record_then_committed_is_byte_for_byte_the_trailer_paths_db(
    base: Path, tmp_path: Path
) -> None:
    twin = tmp_path / "twin.db"
    twin.write_bytes(base.read_bytes())
    trailer = check_trailer(base).recorded_sha256
    commit_in_place(twin, _replay_changes(twin))  # today's path: a new trailer over the whole db

    written = commit_in_place(base, _replay_changes(base), record=_keeping(base))

    replayed = Replayed.from_json(replay_record(base).read_bytes())
    assert not written.has_trailer and not check_trailer(base).present
    assert base.read_bytes() == twin.read_bytes()[:-32]  # the same db, without the trailer
    assert replayed.base.trailer.hex() == trailer and replayed.db_size == base.stat().st_size
    assert replayed_difference(base, replayed) is None
    commit_member_db(twin, _member_changes(twin), record=_committing(twin))
    commit_member_db(base, _member_changes(base), record=_committing(base), replayed=replayed)
    assert sha256(base) == sha256(twin)
    assert replayed_difference(base, replayed, Overwritten.from_json(commit_record(base).read_bytes())) is None


def test_the_replay_hashes_only_the_pages_it_appends(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[tuple[int, int]] = []
    ranges = writer_module._range_sha256
    monkeypatch.setattr(writer_module, "_range_sha256",
                        lambda path, start, end: (hashed.append((start, end)), ranges(path, start, end))[1])
    monkeypatch.setattr(writer_module, "_new_db_sha256", None)  # the whole db's: never called
    size = base.stat().st_size - 32

    commit_in_place(base, _replay_changes(base), record=_keeping(base))

    assert hashed == [(size, base.stat().st_size)]


def test_the_check_of_a_replayed_db_hashes_its_appended_pages_beside_the_base(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = base.stat().st_size - 32
    replayed = _replayed(base)
    hashed: list[tuple[int, int, str]] = []
    ranges = writer_module._range_sha256
    monkeypatch.setattr(writer_module, "_range_sha256", lambda path, start, end: (
        hashed.append((start, end, threading.current_thread().name)), ranges(path, start, end))[1])

    assert replayed_difference(base, replayed) is None

    assert [(start, end) for start, end, _ in hashed] == [(size, replayed.db_size)]
    assert hashed[0][2] != threading.current_thread().name  # at the same time as the base's bytes


@pytest.mark.parametrize("where", ["base", "appended", "replay's meta page"])
def test_a_byte_flipped_in_the_replayed_db_is_refused_before_the_member_db_is_committed(
    base: Path, where: str
) -> None:
    size = base.stat().st_size - 32
    replayed = _replayed(base)
    offset = {"base": size // 3, "appended": size + (replayed.db_size - size) // 2,
              "replay's meta page": replayed.base.meta_offset + 40}[where]
    flip_byte(base, offset)
    txid = _txid(base)

    with pytest.raises(IntegrityError) as raised:
        commit_member_db(base, _member_changes(base), record=_committing(base), replayed=replayed)

    message = str(raised.value)
    assert str(base) in message and "fetch it again" in message and "\n" not in message
    assert {"base": "base snapshot's pages", "appended": "replayed pages",
            "replay's meta page": "not the replayed db"}[where] in message
    assert _txid(base) == txid  # never committed
    assert replayed_difference(base, replayed) is not None


def test_a_byte_flipped_in_the_base_before_the_replay_is_refused_at_the_commit(base: Path) -> None:
    """The gap of a new trailer: the base's bytes were hashed into it, never checked against the
    base's own trailer; now the commit checks them against it."""
    flip_byte(base, (base.stat().st_size - 32) // 3)  # between the fetch's check and the replay
    replayed = _replayed(base)

    with pytest.raises(IntegrityError, match="base snapshot's pages no longer match its sha256 trailer"):
        commit_member_db(base, _member_changes(base), record=_committing(base), replayed=replayed)


def test_a_flipped_byte_in_the_kept_meta_page_is_refused(base: Path) -> None:
    replayed = _replayed(base)
    raw = json.loads(replay_record(base).read_bytes())
    page = bytearray(base64.b64decode(raw["base"]["meta_page"]))
    page[100] ^= 1
    raw["base"]["meta_page"] = base64.b64encode(bytes(page)).decode()
    replay_record(base).write_text(json.dumps(raw))
    damaged = Replayed.from_json(replay_record(base).read_bytes())
    assert damaged != replayed

    with pytest.raises(IntegrityError, match="base snapshot's pages no longer match"):
        commit_member_db(base, _member_changes(base), record=_committing(base), replayed=damaged)
    with pytest.raises(IntegrityError) as raised:
        _require_fetched_intact(base)
    assert str(base) in str(raised.value) and "lifeboat restore --rollback" in str(raised.value)


@pytest.mark.parametrize("record", ["missing", "damaged", "truncated"])
def test_a_replayed_db_without_its_record_is_refused_naming_the_file_and_the_way_on(
    base: Path, record: str
) -> None:
    _replayed(base)
    if record == "missing":
        replay_record(base).unlink()
    else:
        text = replay_record(base).read_bytes()
        replay_record(base).write_bytes(b"{not json" if record == "damaged" else text[: len(text) // 2])

    for check in (lambda: replayed_into(base), lambda: _require_fetched_intact(base)):
        with pytest.raises(IntegrityError) as raised:
            check()
        message = str(raised.value)
        assert str(base) in message and "lifeboat restore --rollback" in message and "\n" not in message


@pytest.mark.parametrize("killed_at", ["pages", "record"])
def test_a_replay_killed_before_its_meta_is_never_committed_into(
    base: Path, monkeypatch: pytest.MonkeyPatch, killed_at: str
) -> None:
    """Killed while its pages are written (no record yet) or between its record and its meta:
    the file names the base's tree, without a trailer; no commit takes it for the replayed db."""
    txid = _txid(base)
    keep = _keeping(base)

    def killed(*args: Any) -> Any:
        raise KeyboardInterrupt

    if killed_at == "pages":
        monkeypatch.setattr(writer_module, "_range_sha256", killed)
    with pytest.raises(KeyboardInterrupt):
        commit_in_place(base, _replay_changes(base),
                        record=(lambda replayed: (keep(replayed), killed())) if killed_at == "record" else keep)
    monkeypatch.undo()

    assert _txid(base) == txid and not check_trailer(base).present
    assert replay_record(base).exists() == (killed_at == "record")
    with pytest.raises(IntegrityError):
        _require_fetched_intact(base)
    if killed_at == "record":
        with pytest.raises(IntegrityError, match="not the replayed db its record describes"):
            commit_member_db(base, _member_changes(base), record=_committing(base), replayed=replayed_into(base))
        assert _txid(base) == txid and not commit_record(base).exists()


@pytest.mark.parametrize("killed_at", ["record", "pages", "meta"])
def test_a_commit_into_a_replayed_db_interrupted_anywhere_is_undone_checked_and_redone_once(
    base: Path, monkeypatch: pytest.MonkeyPatch, killed_at: str
) -> None:
    replayed = _replayed(base)
    original, revision = base.read_bytes(), newest_revision(base)
    record = _committing(base)
    fsyncs = []

    def fsync(fd: int) -> None:  # the first fsyncs the pages, the second the meta
        fsyncs.append(fd)
        if len(fsyncs) == {"pages": 1, "meta": 2}[killed_at]:
            raise KeyboardInterrupt

    def kill_after_record(before: Overwritten) -> None:
        record(before)
        raise KeyboardInterrupt

    if killed_at != "record":
        monkeypatch.setattr(writer_module.os, "fsync", fsync)
    with pytest.raises(KeyboardInterrupt):
        commit_member_db(base, _member_changes(base), replayed=replayed,
                         record=kill_after_record if killed_at == "record" else record)
    monkeypatch.undo()

    assert undo_commit(base) is True
    assert base.read_bytes() == original
    _require_fetched_intact(base)  # what a resumed restore checks first
    commit_member_db(base, _member_changes(base), record=record, replayed=replayed)
    assert newest_revision(base) == revision + 1_000  # bumped once


def test_a_replay_fsyncs_the_fetched_snapshot_while_it_computes_the_new_pages(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot just fetched is mostly unwritten page cache: its pages go to the disk while the
    replay works, not all in the fsync that must precede the meta page."""
    fsync, new_pages = writer_module.os.fsync, writer_module._new_pages
    syncing, fsyncs = threading.Event(), []
    meanwhile: list[bool] = []

    def recorded_fsync(fd: int) -> None:
        fsyncs.append(fd)
        syncing.set()
        fsync(fd)

    def recorded_new_pages(*args: Any) -> Any:
        meanwhile.append(syncing.wait(timeout=10))
        return new_pages(*args)

    monkeypatch.setattr(writer_module.os, "fsync", recorded_fsync)
    monkeypatch.setattr(writer_module, "_new_pages", recorded_new_pages)
    commit_in_place(base, _replay_changes(base), record=_keeping(base))

    assert meanwhile == [True] and len(fsyncs) == 3  # the fetched pages, the new pages, the meta

"""The restore's key sample: the same keys as following every key, in bounded memory."""

from __future__ import annotations

import heapq
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from lifeboat.restore import content
from lifeboat.restore.content import sample_keys
from lifeboat.snapshot import KeyValue
from lifeboat.snapshot.bbolt import BoltFile
from lifeboat.snapshot.mvcc import decode_key_value, encode_revision, latest_rows
from lifeboat.snapshot.replay import encode_fields, tombstone_value
from lifeboat.snapshot.writer import BucketChanges, commit_in_place, write_db

from tests.unit.snapshot.test_latest_rows import db_with


def every_key_sample(path: Path, count: int = 32) -> list[KeyValue]:
    """The sample as defined: the ``count`` live keys of lowest rank, every key followed."""
    with latest_rows(path) as latest:
        chosen = heapq.nsmallest(count, latest, key=content._rank)
        return [decode_key_value(*latest[key]) for key in sorted(chosen)]


def db_of(tmp_path: Path, rows: Iterator[tuple[bytes, bytes]]) -> Path:
    small = db_with(tmp_path / "small.db", [(encode_revision(2), encode_fields(b"/first", 2, 2, 1, b"v", 0))])
    return write_db(small, tmp_path / "big.db", [BucketChanges(b"key", appends=rows)], trailer=False).path


def key(n: int) -> bytes:
    return b"/registry/configmaps/bench/cm-%06d" % n


def puts_then_deletes(keys: int, deleted: range) -> Iterator[tuple[bytes, bytes]]:
    revision = 2
    for n in range(keys):
        revision += 1
        yield encode_revision(revision), encode_fields(key(n), revision, revision, 1, b"value %d" % n, 0)
    for n in range(keys):  # each key updated once, in another order
        revision += 1
        n = (n * 7919) % keys
        yield encode_revision(revision), encode_fields(key(n), 3 + n, revision, 2, b"again %d" % n, 0)
    for n in deleted:
        revision += 1
        yield encode_revision(revision) + b"t", tombstone_value(key(n))


@pytest.fixture
def most_followed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The most keys a scan's map held at once."""
    held: list[int] = [0]
    setitem = content._LowestRanked.__setitem__

    def counting(self: content._LowestRanked, key: bytes, where: tuple[object, int, int]) -> None:
        setitem(self, key, where)  # type: ignore[arg-type]
        held[0] = max(held[0], len(self))

    monkeypatch.setattr(content._LowestRanked, "__setitem__", counting)
    return held


def test_the_sample_is_every_key_samples_and_follows_at_most_64_keys_per_sampled_one(
        tmp_path: Path, most_followed: list[int]) -> None:
    db = db_of(tmp_path, puts_then_deletes(20_000, range(0, 20_000, 3)))
    sample = sample_keys(db, count=8)
    assert [kv.key for kv in sample] == [kv.key for kv in every_key_sample(db, 8)]
    assert sample == every_key_sample(db, 8)
    assert all(kv.version == 2 and kv.value.startswith(b"again") for kv in sample)
    assert 8 < most_followed[0] <= 8 * 64


def test_followed_keys_deleted_after_the_scan_narrowed_are_read_again_with_every_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # All but the last 100 of 20,000 keys are deleted at the end: the bounded scan narrowed
    # long before, and most of what it followed is gone.
    db = db_of(tmp_path, puts_then_deletes(20_000, range(0, 19_900)))
    scans: list[bool] = []
    scan = content.note_latest_rows

    def counted(db: BoltFile, latest: dict[bytes, tuple[object, int, int]], prefix: bytes = b"", *,
                from_revision: int = 0) -> None:
        scans.append(isinstance(latest, content._LowestRanked))
        scan(db, latest, prefix, from_revision=from_revision)  # type: ignore[arg-type]

    monkeypatch.setattr(content, "note_latest_rows", counted)
    sample = sample_keys(db, count=32)
    assert scans == [True, False]  # bounded, then every key
    assert len(sample) == 32
    assert sample == every_key_sample(db, 32)


def test_a_db_with_fewer_live_keys_than_the_count_gives_them_all(tmp_path: Path) -> None:
    db = db_of(tmp_path, puts_then_deletes(10, range(0, 4)))
    assert [kv.key for kv in sample_keys(db, count=32)] == [b"/first", *sorted(key(n) for n in range(4, 10))]


def extra_rows(first_revision: int, created: int, deleted: range) -> Iterator[tuple[bytes, bytes]]:
    """After a base: keys created (ranked anywhere among the base's), then base keys deleted."""
    revision = first_revision
    for n in range(created):
        revision += 1
        name = b"/registry/pods/later/pod-%06d" % n
        yield encode_revision(revision), encode_fields(name, revision, revision, 1, b"new %d" % n, 0)
    for n in deleted:
        revision += 1
        yield encode_revision(revision) + b"t", tombstone_value(key(n))


@pytest.mark.parametrize("created, deleted", [(5_000, range(0, 20_000, 5)), (0, range(0, 19_950)),
                                              (3_000, range(0)), (0, range(19_990, 20_000))],
                         ids=["created-and-deleted", "most-deleted", "created-only", "few-deleted"])
def test_a_sample_read_from_the_base_and_the_rows_above_it_is_the_whole_files(
        tmp_path: Path, created: int, deleted: range) -> None:
    """A replay commits rows into the fetched base itself: the base's pages stay where they
    were, so its followed keys, read before, and the rows above its revision give the sample
    of the whole grown file, however many keys those rows create or delete."""
    small = db_with(tmp_path / "small.db", [(encode_revision(2), encode_fields(b"/first", 2, 2, 1, b"v", 0))])
    base = write_db(small, tmp_path / "base.db", [BucketChanges(b"key", appends=puts_then_deletes(20_000, range(0)))],
                    trailer=True).path
    base_revision = 2 + 2 * 20_000
    below = content.followed_keys(base, count=8)
    assert below.bound is not None, "the base's scan narrowed (more keys than it follows)"
    commit_in_place(base, [BucketChanges(b"key", appends=extra_rows(base_revision, created, deleted))])
    with BoltFile.open(base) as db:
        assert content.sample_keys_above(db, below, base_revision, count=8) == every_key_sample(base, 8)


@pytest.mark.parametrize("child", ["reads", "cannot-start", "killed"])
def test_a_sample_started_below_a_replay_is_the_replayed_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, child: str) -> None:
    """The restore's order: the base's followed keys read in a child process as the replay
    begins, the rows committed into the same file, its sample started and taken (the file
    renamed in between, as the restore moves it into the data dir). A child that cannot start,
    or is killed with SIGKILL before it answers, leaves the whole file to read, and no process."""
    small = db_with(tmp_path / "small.db", [(encode_revision(2), encode_fields(b"/first", 2, 2, 1, b"v", 0))])
    base = write_db(small, tmp_path / "base.db", [BucketChanges(b"key", appends=puts_then_deletes(5_000, range(0)))],
                    trailer=True).path
    base_revision = 2 + 2 * 5_000
    if child == "cannot-start":
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    started: list[subprocess.Popen[bytes]] = []
    start_child = content.lifeboat_child

    def child_started(module: str, *, pass_fds: Sequence[int] = ()) -> subprocess.Popen[bytes]:
        process = start_child(module, pass_fds=pass_fds)
        if child == "killed":  # still importing: it has read nothing yet
            process.send_signal(signal.SIGKILL)
        started.append(process)
        return process

    monkeypatch.setattr(content, "lifeboat_child", child_started)
    read_from: list[int] = []
    note = content.note_latest_rows

    def noted(db: BoltFile, latest: dict[bytes, tuple[object, int, int]], prefix: bytes = b"", *,
              from_revision: int = 0) -> None:
        read_from.append(from_revision)
        note(db, latest, prefix, from_revision=from_revision)  # type: ignore[arg-type]

    monkeypatch.setattr(content, "note_latest_rows", noted)
    monkeypatch.setattr(content, "sample_keys", None)  # neither way reads the file by path again
    samples = content.KeySamples()
    samples.start_below(base, base_revision)
    commit_in_place(base, [BucketChanges(b"key", appends=extra_rows(base_revision, 2_000, range(0, 5_000, 4)))])
    samples.start(base)
    committed = tmp_path / "member.db"
    base.rename(committed)
    assert samples.take(base, committed=committed) == every_key_sample(committed, 32)
    assert read_from == ([base_revision + 1] if child == "reads" else [0]), \
        "only the replayed rows, unless the child failed"
    ended = [process.wait(timeout=10) for process in started]  # none left behind (it raises if one is)
    if child == "cannot-start":
        assert ended == []
    elif child == "killed":
        assert ended == [-signal.SIGKILL]
    else:  # it answered, then ended by itself or as its pipe closed (exit 0 or 1, whichever came first)
        assert len(ended) == 1

"""The upload thread while the repository is down: one try per retry interval, one warning per outage."""

from __future__ import annotations

import errno
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lifeboat.capture.spool import Spool
from lifeboat.capture.upload import SpoolOverflow, Uploader, Waiting
from lifeboat.catalog.chains import ChainStore, named
from lifeboat.errors import RepositoryUnavailable
from lifeboat.store.memory import Fault, MemoryStore

CHAIN = "20261201T030000Z-aaaaaa"
SEEN = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)


def segment(revision: int) -> Waiting:
    seen = SEEN + timedelta(seconds=revision)
    return Waiting(CHAIN, named(revision, revision, seen, seen, encrypted=False), b"events", revision)


def tries(store: MemoryStore) -> int:
    """Upload attempts: a segment's put, or the listing a spooled segment's upload starts with."""
    return store.calls["put_bytes"] + store.calls["list"]


def test_a_repository_that_is_down_is_tried_once_per_retry_interval_and_named_once(tmp_path: Path) -> None:
    # In a soak, S3 was down 40 s while capture closed a segment every ~0.6 s: each new segment
    # woke the uploader's retry wait, so it tried the store again at once and logged the same
    # warning 63 times (an hour's outage: thousands of lines and requests), ignoring retry-interval.
    store = MemoryStore()
    store.inject(Fault("put_bytes", error=RepositoryUnavailable("S3 bucket is down")))  # the first try fails
    notes: list[str] = []
    uploader = Uploader(ChainStore(store), "prod", Spool(tmp_path / "spool", 1 << 20), max_queued_bytes=1 << 20,
                        retry_interval=30, note=notes.append)
    try:
        uploader.submit(segment(2))
        deadline = time.monotonic() + 10
        while not notes:
            assert time.monotonic() < deadline, "the failed upload was not noted"
            time.sleep(0.01)
        first = tries(store)
        for revision in range(3, 13):  # capture goes on closing segments, as it does once a second
            uploader.submit(segment(revision))
            time.sleep(0.05)
        assert uploader.spooled == 11
        assert tries(store) == first, "a new segment is no reason to try the store again before retry-interval"
        assert len(notes) == 1, notes
        uploader.flush(timeout=10)  # what `lifeboat capture` does before it ends: try now
        stored = [key.rpartition("/")[2] for key in store.keys() if key.endswith(".seg.zst")]
        assert stored == [segment(revision).name for revision in range(2, 13)]
    finally:
        uploader.close()


def test_a_spooled_segment_that_cannot_be_read_back_ends_its_chain_before_it_and_uploads_go_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An EIO reading a spooled segment killed the upload thread (an OSError, not a lifeboat error):
    capture then failed with it at every start, since the next capture met the same file first,
    and no gap was recorded."""
    store = MemoryStore()
    spool = Spool(tmp_path / "spool", 1 << 20)
    for revision in (2, 3, 4):
        spool.add(CHAIN, segment(revision).name, b"events")
    lost = segment(3).name
    read = Path.read_bytes

    def failing(path: Path) -> bytes:
        if path.name.endswith(lost):
            raise OSError(errno.EIO, "Input/output error")
        return read(path)

    monkeypatch.setattr(Path, "read_bytes", failing)
    uploader = Uploader(ChainStore(store), "prod", spool, max_queued_bytes=1 << 20, retry_interval=30)
    try:
        deadline = time.monotonic() + 10
        with pytest.raises(SpoolOverflow) as ended:
            while time.monotonic() < deadline:
                uploader.check()
                time.sleep(0.01)
        assert ended.value.chain == CHAIN and ended.value.last_revision == 2
        assert "could not be read back (Input/output error)" in str(ended.value)
        assert spool.names() == [] and spool.size == 0
        assert sorted(p.name for p in spool.directory.iterdir() if p.name.startswith(".unreadable-")) == [
            f".unreadable-000000000002.{CHAIN}.{lost}", f".unreadable-000000000003.{CHAIN}.{segment(4).name}"]
        uploader.submit(segment(5))  # the uploader lives on
        uploader.flush(timeout=10)
        stored = sorted(key.rpartition("/")[2] for key in store.keys() if key.endswith(".seg.zst"))
        assert stored == sorted([segment(2).name, segment(5).name])
    finally:
        uploader.close()

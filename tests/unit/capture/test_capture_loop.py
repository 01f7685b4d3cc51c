"""The capture loop on the in-memory etcd and object store: spooling while the repository is
down, then catching up in order with no gap."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import pyrage

from lifeboat.backup.pipeline import BackupOptions
from lifeboat.capture import Capture, CaptureOptions, CaptureStatus
from lifeboat.capture import run as run_module
from lifeboat.capture.segmenter import group_revisions
from lifeboat.capture.spool import Spool
from lifeboat.catalog.age_keys import load_recipients
from lifeboat.catalog.chains import ChainInfo, ChainStore
from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.segments import Predecessor, Segment
from lifeboat.catalog.timeline import SYNTHETIC_CHAIN, build_timeline
from lifeboat.clock import FakeClock
from lifeboat.errors import LifeboatError, OperationFailed, RepositoryUnavailable
from lifeboat.etcd.memory import MemoryEtcd, MemoryFeed, member_urls
from lifeboat.etcdapi.model import MemberStatus, ReceivedEvents
from lifeboat.store import ObjectInfo
from lifeboat.store.memory import Fault, MemoryStore
from tests.unit.catalog.capture_records import manifest
from tests.unit.snapshot.test_bbolt_synthetic import build as build_db

BASE = manifest("20261201T030000Z-aaaaaa", 1, 0, cluster_id="c1")


def resumable(store: MemoryStore, base: Manifest = BASE) -> tuple[BackupRepository, ChainStore]:
    """A repository holding ``base`` (data, then manifest) and its open chain, with no segment yet."""
    repo = BackupRepository.open(store, create=True)
    for obj in base.objects:
        repo.write_object(base.cluster, base.id, obj.name, [b"x" * obj.size])
    repo.commit(base)
    chains = ChainStore(store)
    chains.start(ChainInfo(base.id, "prod", base.id, 1, "c1", base.finished_at))
    return repo, chains


def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.mark.parametrize("refusal", [RepositoryUnavailable("down"), OperationFailed(
    "writing clusters/prod/... in file:///backups failed: the disk is full; free space and retry")],
    ids=["unavailable", "disk full"])
def test_segments_wait_in_the_spool_while_the_repository_is_down_and_go_up_in_order(
        tmp_path: Path, refusal: LifeboatError) -> None:
    # A full disk killed the upload thread: capture went on reading etcd, uploading and
    # spooling nothing, and said at the end that it had committed what it had not.
    store = MemoryStore()
    repo, chains = resumable(store)
    segments = f"clusters/prod/chains/{BASE.id}/segments/"
    for _ in range(4):  # the repository refuses four segment writes in a row
        store.inject(Fault("put_bytes", key_prefix=segments, error=refusal))
    etcd = MemoryEtcd()
    options = CaptureOptions(
        backup=BackupOptions(cluster="prod", endpoints=(member_urls(1)[0],), capture_files=False),
        flush_interval=0.05, spool_dir=tmp_path / "spool", retry_interval=0.05)
    status = CaptureStatus()
    stop = threading.Event()
    runner = threading.Thread(target=Capture(etcd, repo, options, stop=stop, status=status).run, daemon=True)
    runner.start()
    try:
        revisions = []
        for i in range(8):
            revisions.append(etcd.put(f"/registry/k{i}", b"v"))
            time.sleep(0.08)
        until(lambda: status.last_revision == revisions[-1] and status.spooled == 0)
    finally:
        stop.set()
        runner.join(10)
    assert any("spooling" in e for e in status.errors)
    assert status.bases == 0 and status.gaps == 0
    (listing,) = chains.chains("prod")
    refs = listing.segments
    assert refs[0].first_revision == 2 and refs[-1].last_revision == revisions[-1]
    assert all(b.first_revision == a.last_revision + 1 for a, b in zip(refs, refs[1:]))
    assert build_timeline("prod", [BASE], [listing]).gaps == ()
    assert [p.name for p in tmp_path.joinpath("spool", "prod").iterdir()] == [".lock"]


def test_an_idle_capture_records_a_heartbeat_once_etcd_vouches_for_its_revision(tmp_path: Path) -> None:
    store = MemoryStore()
    repo, chains = resumable(store)
    clock = FakeClock(datetime.fromisoformat(BASE.finished_at) + timedelta(minutes=1))
    etcd = MemoryEtcd(clock)
    written = etcd.put("/registry/k", b"v")
    options = CaptureOptions(
        backup=BackupOptions(cluster="prod", endpoints=(member_urls(1)[0],), capture_files=False),
        flush_interval=0.05, heartbeat_interval=30, spool_dir=tmp_path / "spool", retry_interval=0.05)
    stop = threading.Event()
    runner = threading.Thread(target=Capture(etcd, repo, options, stop=stop, clock=clock).run, daemon=True)
    runner.start()
    started = clock.now()

    def beaten() -> bool:
        if chains.chains("prod")[0].heartbeat is not None:
            return True
        clock.advance(30)  # idle for a heartbeat interval, on the capture's clock only
        return False

    try:
        until(beaten)
    finally:
        stop.set()
        runner.join(10)
    (listing,) = chains.chains("prod")
    assert listing.heartbeat is not None and listing.heartbeat.revision == written
    assert listing.heartbeat.seen - started >= timedelta(seconds=30)  # stamped on the clock, an interval on
    timeline = build_timeline("prod", [BASE], [listing])
    assert timeline.windows[0].last_time == listing.heartbeat.seen


class SnapshottingEtcd(MemoryEtcd):
    """The double plus a snapshot stream: a small real bbolt db and etcd's sha256 trailer."""

    def __init__(self, db: Path) -> None:
        super().__init__()
        self.db = db

    def snapshot(self, endpoint: str) -> Iterator[bytes]:
        data = self.db.read_bytes()
        yield data
        yield hashlib.sha256(data).digest()


def down_for_the_chain(tmp_path: Path, **capture: int) -> tuple[BackupRepository, ChainStore, MemoryEtcd,
                                                                  CaptureOptions]:
    """BASE's chain, whose segments the repository refuses; an etcd that can be backed up for a
    new base; capture options with ``capture``."""
    store = MemoryStore()
    repo, chains = resumable(store)
    for _ in range(50):  # the repository stays down for this chain's segments
        store.inject(Fault("put_bytes", key_prefix=f"clusters/prod/chains/{BASE.id}/segments/",
                           error=RepositoryUnavailable("down")))
    etcd = SnapshottingEtcd(build_db(tmp_path / "base.db", [4]))
    options = CaptureOptions(
        backup=BackupOptions(cluster="prod", endpoints=(member_urls(1)[0],), capture_files=False,
                             tmp_dir=tmp_path),
        flush_interval=0.05, spool_dir=tmp_path / "spool", retry_interval=0.05, **capture)  # type: ignore[arg-type]
    return repo, chains, etcd, options


def test_a_full_spool_ends_the_chain_with_a_gap_and_a_new_base_starts_the_next(tmp_path: Path) -> None:
    repo, chains, etcd, options = down_for_the_chain(tmp_path, spool_max_bytes=10)
    status = CaptureStatus()
    stop = threading.Event()
    runner = threading.Thread(target=Capture(etcd, repo, options, stop=stop, status=status).run, daemon=True)
    runner.start()
    try:
        etcd.put("/registry/k", b"v")
        until(lambda: status.bases == 1 and len(chains.chains("prod")) == 2)
    finally:
        stop.set()
        runner.join(10)
    first, second = chains.chains("prod")
    assert first.info.chain == BASE.id and first.gap is not None
    assert "spool filled up" in first.gap.reason and first.gap.last_revision == 1
    assert second.gap is None and status.gaps == 1
    left = [p.name for p in (tmp_path / "spool" / "prod").iterdir()]
    assert left == [".lock"], "nothing is left behind in memory or spool"


KEY_A, KEY_B = (str(pyrage.x25519.Identity.generate().to_public()) for _ in range(2))


@pytest.mark.parametrize("chain_recipients, capture_recipients", [
    ((KEY_A,), ()), ((), (KEY_A,)), ((KEY_A,), (KEY_B,)), ((KEY_A,), (KEY_A, KEY_B)),
], ids=["encrypted chain, capture without --encrypt-to", "plain chain, encrypted capture",
        "other recipient", "one recipient more"])
def test_a_capture_encrypting_otherwise_than_its_chain_starts_a_chain_of_its_own(
        tmp_path: Path, chain_recipients: tuple[str, ...], capture_recipients: tuple[str, ...]) -> None:
    """An agent or capture restarted without --encrypt-to resumed the encrypted chain and wrote
    every later revision, Secrets included, in clear beside it: a chain keeps one encryption."""
    base = BASE.model_copy(update={"encryption": "age" if chain_recipients else None,
                                   "recipients": chain_recipients})
    store = MemoryStore()
    repo, chains = resumable(store, base)
    etcd = SnapshottingEtcd(build_db(tmp_path / "base.db", [4]))
    for n in range(4):  # etcd at the new base's revision, the snapshot's
        etcd.put(f"/registry/k{n}", b"v")
    options = CaptureOptions(
        backup=BackupOptions(cluster="prod", endpoints=(member_urls(1)[0],), capture_files=False,
                             tmp_dir=tmp_path, recipients=tuple(load_recipients(list(capture_recipients)))),
        flush_interval=0.05, spool_dir=tmp_path / "spool", retry_interval=0.05)
    status = CaptureStatus()
    with capturing(Capture(etcd, repo, options, status=status)):
        until(lambda: status.chain is not None)
        written = etcd.put("/registry/secrets/default/token", b"hunter2")
        until(lambda: status.last_revision == written and status.spooled == 0)
    assert status.errors == []
    first, second = chains.chains("prod")
    assert first.info.chain == base.id and first.segments == ()
    assert first.gap is not None and "encrypt" in first.gap.reason and status.gaps == 1
    assert second.gap is None and second.segments and status.bases == 1
    new_base = repo.read_manifest("prod", second.info.base_backup)
    assert isinstance(new_base, Manifest) and set(new_base.recipients) == set(capture_recipients)


def test_a_spool_whose_disk_is_full_ends_the_chain_with_a_gap_like_a_full_spool(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The repository down and the spool's file system full (ENOSPC): the upload thread died
    of the OSError (its last-resort handler spooled again and raised again), uploads stopped
    for good, and capture went on handing segments to nobody, saying nothing."""
    def no_space(self: Spool, final: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    repo, chains, etcd, options = down_for_the_chain(tmp_path)
    status = CaptureStatus()
    with capturing(Capture(etcd, repo, options, status=status)):
        until(lambda: status.chain is not None)
        with monkeypatch.context() as patched:
            patched.setattr(Spool, "_write", no_space)
            etcd.put("/registry/k", b"v")
            until(lambda: any("could not be written" in e for e in status.errors))
        until(lambda: status.bases == 1 and len(chains.chains("prod")) == 2)
    first, second = chains.chains("prod")
    assert first.info.chain == BASE.id and first.gap is not None
    assert "No space left on device" in first.gap.reason and first.gap.last_revision == 1
    assert second.gap is None and status.gaps == 1


def test_a_burst_is_cut_into_segments_that_each_stay_within_segment_max_bytes_as_stored(tmp_path: Path) -> None:
    """Everything etcd wrote while capture was away arrives at once: one segment of it all
    would be many times ``segment_max_bytes`` (and never fit a spool of that size)."""
    recipient = pyrage.x25519.Identity.generate().to_public()
    store = MemoryStore()  # the chain is encrypted to the capture's recipient: it resumes
    repo, chains = resumable(store, BASE.model_copy(update={"encryption": "age", "recipients": (str(recipient),)}))
    etcd = MemoryEtcd()
    lease = etcd.lease_grant(60)
    # Values that do not compress (Secrets encrypted at rest), some with a lease, a transaction.
    written = [etcd.put(f"/registry/secrets/ns/s{i}", os.urandom(700 + 37 * i), lease if i % 3 == 0 else 0)
               for i in range(60)]
    options = CaptureOptions(
        backup=BackupOptions(cluster="prod", endpoints=(member_urls(1)[0],), capture_files=False,
                             recipients=tuple(load_recipients([str(recipient)]))),
        flush_interval=1.0, segment_max_bytes=8192, spool_dir=tmp_path / "spool", spool_max_bytes=8192,
        retry_interval=0.05)
    status = CaptureStatus()
    stop = threading.Event()
    runner = threading.Thread(target=Capture(etcd, repo, options, stop=stop, status=status).run, daemon=True)
    runner.start()
    try:
        until(lambda: status.last_revision == written[-1] and status.spooled == 0)
    finally:
        stop.set()
        runner.join(10)
    assert status.gaps == 0 and status.bases == 0 and not status.errors
    (listing,) = chains.chains("prod")
    refs = listing.segments
    assert len(refs) >= 5 and refs[0].first_revision == 2 and refs[-1].last_revision == written[-1]
    assert all(b.first_revision == a.last_revision + 1 for a, b in zip(refs, refs[1:]))
    sizes = [obj.size for obj in store.list(f"clusters/prod/chains/{BASE.id}/segments/")]
    assert len(sizes) == len(refs) and max(sizes) <= 8192
    assert sum(sizes) > 3 * 8192  # most segments are near the limit, not a few events each


def options_for(tmp_path: Path, flush: float) -> CaptureOptions:
    return CaptureOptions(
        backup=BackupOptions(cluster="prod", endpoints=(member_urls(1)[0],), capture_files=False),
        flush_interval=flush, spool_dir=tmp_path / "spool", retry_interval=0.05)


def test_a_capture_that_no_longer_leads_writes_no_segment(tmp_path: Path) -> None:
    store = MemoryStore()
    repo, chains = resumable(store)
    etcd = MemoryEtcd()
    leads = threading.Event()
    leads.set()
    status = CaptureStatus()
    stop = threading.Event()
    capture = Capture(etcd, repo, options_for(tmp_path, 0.3), stop=stop, status=status, fence=leads.is_set)
    runner = threading.Thread(target=capture.run, daemon=True)
    runner.start()
    try:
        until(lambda: status.chain is not None)
        etcd.put("/registry/k", b"v")
        leads.clear()  # leadership lost while the segment is open
        until(lambda: any("no longer leads" in e for e in status.errors))
    finally:
        stop.set()
        runner.join(10)
    assert chains.chains("prod")[0].segments == ()
    assert status.segments == 0


def test_a_resumed_capture_finds_the_chain_continued_by_another_and_resumes_after_it(tmp_path: Path) -> None:
    store = MemoryStore()
    repo, chains = resumable(store)
    etcd = MemoryEtcd()
    status = CaptureStatus()
    stop = threading.Event()
    runner = threading.Thread(target=Capture(etcd, repo, options_for(tmp_path, 0.5), stop=stop, status=status).run,
                              daemon=True)
    runner.start()
    try:
        until(lambda: status.chain is not None)  # resumed after the base: its next segment starts at 2
        etcd.put("/registry/a", b"1")
        etcd.put("/registry/b", b"2")
        # Meanwhile another capture (a leader this one did not know of) continued the chain.
        with etcd.watch(b"", prefix=True, start_revision=2) as watch:
            events = [watch.next_event(1), watch.next_event(1)]
        theirs = Segment("prod", BASE.id, Predecessor("base", 1, BASE.id),
                         tuple(group_revisions([e for e in events if e is not None], datetime.now(timezone.utc))))
        chains.commit_segment(theirs, (), 1)
        until(lambda: status.last_revision == 3)
        written = etcd.put("/registry/c", b"3")
        until(lambda: status.last_revision == written)
    finally:
        stop.set()
        runner.join(10)
    ranges = [(s.first_revision, s.last_revision) for s in chains.chains("prod")[0].segments]
    assert ranges == [(2, 3), (4, 4)], "one chain, each revision once"


class HangingStore(MemoryStore):
    """The double, with writes under ``hanging`` that hang (as an object store's client
    retrying for half a minute does) until ``released`` is set."""

    def __init__(self, hanging: str = "/segments/") -> None:
        super().__init__()
        self.hanging = hanging
        self.released = threading.Event()
        self.hung = 0

    def put_bytes(self, key: str, data: bytes, *, create_only: bool = False) -> ObjectInfo:
        if self.hanging in key and not self.released.is_set():
            self.hung += 1
            self.released.wait()
        return super().put_bytes(key, data, create_only=create_only)


def test_a_hanging_store_neither_stops_capture_nor_fills_its_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "UPLOAD_QUEUE_BYTES", 3000)  # about two segments of the writes below
    store = HangingStore()
    repo, chains = resumable(store)
    etcd = MemoryEtcd()
    status = CaptureStatus()
    stop = threading.Event()
    capture = Capture(etcd, repo, options_for(tmp_path, 0.05), stop=stop, status=status)
    runner = threading.Thread(target=capture.run, daemon=True)
    runner.start()
    queued: list[int] = []
    try:
        until(lambda: status.chain is not None)
        revisions = []
        for i in range(40):
            revisions.append(etcd.put(f"/registry/k{i % 7}", b"v" * 1000))
            time.sleep(0.02)
            queued.append(capture.uploader.queued_bytes)
        # Every revision was taken from the watch and handed on while the store hung.
        until(lambda: status.last_revision == revisions[-1])
        assert store.hung >= 1 and not store.released.is_set()
        assert status.spooled > 0, "past the queue's limit, segments wait on disk"
        assert status.lag_seconds(datetime.now(timezone.utc)) > 0, "what waits for the store counts as lag"
        store.released.set()
        until(lambda: status.spooled == 0 and chains.chains("prod")[0].segments[-1:] != ()
              and chains.chains("prod")[0].segments[-1].last_revision == revisions[-1])
    finally:
        store.released.set()
        stop.set()
        runner.join(10)
    assert max(queued) <= 3000
    refs = chains.chains("prod")[0].segments
    assert refs[0].first_revision == 2
    assert all(b.first_revision == a.last_revision + 1 for a, b in zip(refs, refs[1:])), "no gap, no duplicate"
    assert build_timeline("prod", [BASE], [chains.chains("prod")[0]]).gaps == ()
    assert [p.name for p in tmp_path.joinpath("spool", "prod").iterdir()] == [".lock"]


class BlackHoleStore(MemoryStore):
    """The double, where once ``hang`` is set every call hangs until ``released`` is set: a
    store behind a network that drops packets, or SIGSTOPped (S3 clients wait minutes)."""

    def __init__(self) -> None:
        super().__init__()
        self.hang = threading.Event()
        self.released = threading.Event()

    def _wait(self) -> None:
        if self.hang.is_set():
            self.released.wait()

    def put_bytes(self, key: str, data: bytes, *, create_only: bool = False) -> ObjectInfo:
        self._wait()
        return super().put_bytes(key, data, create_only=create_only)

    def list(self, prefix: str = "", *, after: str = "") -> Iterator[ObjectInfo]:
        self._wait()
        return super().list(prefix, after=after)

    def stat(self, key: str) -> ObjectInfo | None:
        self._wait()
        return super().stat(key)


def test_a_store_that_stops_answering_every_call_does_not_stop_the_watch_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGSTOPped SeaweedFS: capture's look for another writer's segment (made after a pause
    of two flush intervals and a second, so before most commits of a cluster written every
    few seconds) and its check that the chain's record is there waited for the store in the
    watch loop, minutes per call, while nothing was read from etcd or spooled (past etcd's
    compaction, a gap the spool is there to prevent)."""
    monkeypatch.setattr(run_module, "STORE_LOOK_SECONDS", 0.2)
    store = BlackHoleStore()
    repo, chains = resumable(store)
    etcd = MemoryEtcd()
    status = CaptureStatus()
    options = dataclasses.replace(options_for(tmp_path, 0.05), heartbeat_interval=0.3)
    with capturing(Capture(etcd, repo, options, status=status)):
        first = etcd.put("/registry/k", b"v")
        until(lambda: chains.chains("prod")[0].segments[-1:] != ()
              and chains.chains("prod")[0].segments[-1].last_revision == first)
        store.hang.set()
        time.sleep(1.3)  # a pause: the next commit looks for another writer's segment first
        try:
            later = [etcd.put(f"/registry/k{i}", b"v") for i in range(3) if not time.sleep(0.2)]
            until(lambda: status.last_revision == later[-1], timeout=10)
            until(lambda: status.spooled > 0, timeout=10)  # what the store did not take waits on disk
        finally:
            store.released.set()
        until(lambda: status.spooled == 0 and chains.chains("prod")[0].segments[-1].last_revision == later[-1])
    refs = chains.chains("prod")[0].segments
    assert refs[0].first_revision == 2 and refs[-1].last_revision == later[-1]
    assert all(b.first_revision == a.last_revision + 1 for a, b in zip(refs, refs[1:])), "no gap, no duplicate"
    assert status.gaps == 0 and status.bases == 0
    assert sum("not answer" in e for e in status.errors) == 1, "said once, not at every commit"


def test_a_heartbeat_the_store_hangs_on_does_not_hold_up_the_events_after_it(tmp_path: Path) -> None:
    store = HangingStore(hanging="/heartbeat.json")
    repo, chains = resumable(store)
    clock = FakeClock(datetime.fromisoformat(BASE.finished_at) + timedelta(minutes=1))
    etcd = MemoryEtcd(clock)
    etcd.put("/registry/k", b"v")
    options = CaptureOptions(
        backup=BackupOptions(cluster="prod", endpoints=(member_urls(1)[0],), capture_files=False),
        flush_interval=0.05, heartbeat_interval=30, spool_dir=tmp_path / "spool", retry_interval=0.05)
    status = CaptureStatus()
    stop = threading.Event()
    runner = threading.Thread(target=Capture(etcd, repo, options, stop=stop, clock=clock, status=status).run,
                              daemon=True)
    runner.start()
    try:
        until(lambda: len(chains.chains("prod")[0].segments) == 1)

        def beating() -> bool:
            clock.advance(30)  # idle for a heartbeat interval, on the capture's clock only
            return store.hung == 1

        until(beating)
        later = etcd.put("/registry/k", b"v2")
        clock.advance(1)
        until(lambda: status.last_revision == later)  # taken and committed while the heartbeat hangs
        assert not store.released.is_set()
    finally:
        store.released.set()
        stop.set()
        runner.join(10)


class HeldFeed:
    """A feed that reads in passes whose next pass is far off: it hands nothing over until
    hurried, then everything."""

    def __init__(self, inner: MemoryFeed) -> None:
        self.inner = inner
        self.hurried = 0

    @property
    def ended(self) -> bool:
        return self.inner.ended

    def take(self, timeout: float | None = None) -> list[ReceivedEvents]:
        if not self.hurried:
            time.sleep(min(timeout or 0.0, 0.05))
            return []
        return self.inner.take(timeout)

    def hurry(self) -> int:
        self.hurried += 1
        return self.hurried

    def passed(self, ticket: int) -> bool:
        return self.hurried >= ticket

    def close(self) -> None:
        self.inner.close()


class PassingEtcd(MemoryEtcd):
    def follow(self, start_revision: int, *, lag: float = 0.0) -> HeldFeed:
        return HeldFeed(super().follow(start_revision, lag=lag))


def test_a_stopped_capture_reads_what_etcd_had_before_it_commits(tmp_path: Path) -> None:
    """Stopping (SIGTERM) asks a feed that reads in passes for one more at once: what etcd
    acknowledged before the stop is committed, not left to the capture that resumes."""
    store = MemoryStore()
    repo, chains = resumable(store)
    etcd = PassingEtcd()
    status = CaptureStatus()
    stop = threading.Event()
    runner = threading.Thread(target=Capture(etcd, repo, options_for(tmp_path, 0.05), stop=stop, status=status).run,
                              daemon=True)
    runner.start()
    try:
        until(lambda: status.chain is not None)
        written = [etcd.put(f"/registry/k{i}", b"v") for i in range(3)]
        time.sleep(0.3)
        assert status.last_revision == 1, "nothing read before the stop"
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()
    assert status.last_revision == written[-1] and status.gaps == 0
    (listing,) = chains.chains("prod")
    assert [(r.first_revision, r.last_revision) for r in listing.segments] == [(written[0], written[-1])]


def test_an_upload_thread_that_fails_unexpectedly_stops_the_capture_with_its_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a capture that goes on watching with nobody uploading what it hands over."""
    store = MemoryStore()
    repo, _chains = resumable(store)

    def broken(*args: object, **kw: object) -> None:
        raise RuntimeError("a bug in the upload path")

    monkeypatch.setattr(ChainStore, "put_encoded", broken)
    etcd = MemoryEtcd()
    options = CaptureOptions(
        backup=BackupOptions(cluster="prod", endpoints=(member_urls(1)[0],), capture_files=False),
        flush_interval=0.05, spool_dir=tmp_path / "spool", retry_interval=0.05)
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            Capture(etcd, repo, options, stop=stop).run()
        except BaseException as exc:  # what the command (or the agent) reports
            failure.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    try:
        for i in range(20):
            etcd.put(f"/registry/k{i}", b"v")
            time.sleep(0.05)
            if not runner.is_alive():
                break
        runner.join(10)
    finally:
        stop.set()
        runner.join(10)
    assert [str(e) for e in failure] == ["a bug in the upload path"]
    spooled = list(tmp_path.joinpath("spool").rglob("*.seg.zst*"))
    assert spooled, "what was handed over waits in the spool for the next capture"


@contextmanager
def capturing(capture: Capture) -> Iterator[None]:
    """``capture`` running in a thread for the block; stopped (and committed) after it."""
    runner = threading.Thread(target=capture.run, daemon=True)
    runner.start()
    try:
        yield
    finally:
        capture.stop.set()
        runner.join(10)


def capture_of_resumable(tmp_path: Path) -> tuple[MemoryStore, BackupRepository, SnapshottingEtcd, CaptureStatus,
                                                  Capture]:
    """A capture of the chain of :func:`resumable`, which checks it every 0.1 s, able to take a new base."""
    store = MemoryStore()
    repo, _chains = resumable(store)
    etcd = SnapshottingEtcd(build_db(tmp_path / "base.db", [4]))  # the new base's snapshot
    options = CaptureOptions(
        backup=BackupOptions(cluster="prod", endpoints=(member_urls(1)[0],), capture_files=False,
                             tmp_dir=tmp_path),
        flush_interval=0.05, heartbeat_interval=0.1, spool_dir=tmp_path / "spool", retry_interval=0.05)
    status = CaptureStatus()
    return store, repo, etcd, status, Capture(etcd, repo, options, status=status)


@pytest.mark.parametrize("gone", ["the chain's record", "the whole repository (not mounted)"])
def test_a_chain_deleted_under_the_capture_is_left_for_a_new_base_and_chain(tmp_path: Path, gone: str) -> None:
    """Its record deleted (with its base, by hand, or by a bucket's expiry rule), capture went
    on appending segments no restore could use, and said "0 gaps"."""
    store, repo, etcd, status, capture = capture_of_resumable(tmp_path)
    with capturing(capture):
        first = [etcd.put(f"/registry/k{i}", b"v") for i in range(5)][-1]
        until(lambda: status.last_revision == first)
        store.delete(f"clusters/prod/chains/{BASE.id}/chain.json")
        if gone != "the chain's record":
            store.delete("lifeboat-repository.json")  # as a mount point without its disk shows it
            until(lambda: any("does not hold its marker" in e for e in status.errors))
            assert status.bases == 0 and status.gaps == 0  # not taken for a deletion
            return
        until(lambda: status.bases == 1)
        later = etcd.put("/registry/k9", b"v")
        until(lambda: status.last_revision == later)
    (listing,) = ChainStore(store).chains("prod")
    assert listing.info.chain != BASE.id
    assert listing.segments[-1].last_revision == later
    assert status.gaps == 1 and any("was deleted from the repository" in e for e in status.errors)


def test_a_repository_not_mounted_gets_no_segments_until_its_marker_is_back(tmp_path: Path) -> None:
    """Its marker gone (a share not mounted), capture said so and went on uploading: on a real
    mount point its segments landed on the local disk, hidden once the share was back, and the
    chain had a hole there. They wait in the spool now, and go up once the marker is back."""
    store, repo, etcd, status, capture = capture_of_resumable(tmp_path)
    chain_key = f"clusters/prod/chains/{BASE.id}/chain.json"
    with capturing(capture):
        first = [etcd.put(f"/registry/k{i}", b"v") for i in range(5)][-1]
        until(lambda: status.last_revision == first)
        record, marker = store.get_bytes(chain_key), store.get_bytes("lifeboat-repository.json")
        store.delete(chain_key)
        store.delete("lifeboat-repository.json")  # as a mount point without its disk shows it
        until(lambda: any("does not hold its marker" in e for e in status.errors))
        uploaded = {o.key for o in store.list("clusters/prod/chains/")}
        later = [etcd.put(f"/registry/m{i}", b"v") for i in range(5)][-1]
        until(lambda: status.last_revision == later)
        time.sleep(0.3)  # several upload retries
        assert {o.key for o in store.list("clusters/prod/chains/")} == uploaded
        assert status.spooled > 0
        store.put_bytes("lifeboat-repository.json", marker)  # the share is back
        store.put_bytes(chain_key, record)
        until(lambda: status.spooled == 0)
    (listing,) = ChainStore(store).chains("prod")
    assert listing.info.chain == BASE.id and status.gaps == 0 and status.bases == 0
    covered = listing.info.base_revision
    for ref in listing.segments:
        assert ref.first_revision == covered + 1
        covered = ref.last_revision
    assert covered >= later


@pytest.mark.parametrize("folded", [False, True], ids=["base deleted", "base folded into a synthetic backup"])
def test_a_chain_whose_base_is_deleted_under_the_capture_is_closed_for_a_new_base(
        tmp_path: Path, folded: bool) -> None:
    """Its base backup deleted with its record kept (`delete --force`, by hand), capture went
    on appending segments no restore could start from; a fold that wrote a full backup from
    the chain before deleting the base is the chain going on, not a loss."""
    store, repo, etcd, status, capture = capture_of_resumable(tmp_path)
    with capturing(capture):
        first = [etcd.put(f"/registry/k{i}", b"v") for i in range(5)][-1]
        until(lambda: status.last_revision == first)
        if folded:
            synthetic = manifest("20261201T030500Z-bbbbbb", first, 300).model_copy(
                update={"labels": {SYNTHETIC_CHAIN: BASE.id}})
            for obj in synthetic.objects:
                repo.write_object(synthetic.cluster, synthetic.id, obj.name, [b"x" * obj.size])
            repo.commit(synthetic)
        store.delete(f"clusters/prod/manifests/{BASE.id}.json")
        later = etcd.put("/registry/k9", b"v")
        until(lambda: status.last_revision == later)
        time.sleep(0.5)  # several checks of the chain
        if not folded:
            until(lambda: status.bases == 1)
    listings = ChainStore(store).chains("prod")
    if folded:
        assert [c.info.chain for c in listings] == [BASE.id] and listings[0].gap is None
        assert status.bases == 0 and status.gaps == 0
        return
    old, new = listings
    assert old.info.chain == BASE.id and old.gap is not None and "was deleted" in old.gap.reason
    assert new.info.chain != BASE.id and status.gaps == 1


def test_a_capture_resuming_a_chain_seen_later_than_its_clock_says_its_clock_is_behind(tmp_path: Path) -> None:
    """A host whose clock is behind the previous writer's stamps later revisions with earlier
    seen times, which --to-time reads: nothing said so."""
    store = MemoryStore()
    repo, chains = resumable(store)
    etcd = MemoryEtcd()
    etcd.put("/registry/a", b"1")
    with etcd.watch(b"", prefix=True, start_revision=2) as watch:
        event = watch.next_event(1)
    assert event is not None
    ahead = datetime.now(timezone.utc) + timedelta(minutes=5)  # the previous writer's clock
    chains.commit_segment(Segment("prod", BASE.id, Predecessor("base", 1, BASE.id),
                                  tuple(group_revisions([event], ahead))), (), 1)
    status = CaptureStatus()
    with capturing(Capture(etcd, repo, options_for(tmp_path, 0.5), status=status)):
        until(lambda: status.chain is not None)
    (note,) = [e for e in status.errors if "clock" in e]
    behind = int(note.split("this host's clock is ")[1].split(" s behind")[0])
    assert 295 <= behind <= 300 and "synchronise" in note, note


class StallingEtcd(MemoryEtcd):
    """The double, whose first feed never delivers anything (a watch on a member that hangs
    without closing the stream); the feeds after it deliver as the double's do."""

    def __init__(self) -> None:
        super().__init__()
        self.feeds = 0

    def follow(self, start_revision: int, *, lag: float = 0.0) -> MemoryFeed:
        self.feeds += 1
        feed = super().follow(start_revision, lag=lag)
        if self.feeds == 1:
            feed.take = lambda timeout=None: (time.sleep(min(timeout or 0, 0.05)), [])[1]  # type: ignore[method-assign]
        return feed


def test_a_watch_that_delivers_nothing_while_etcd_moves_on_is_followed_again(tmp_path: Path) -> None:
    """The heartbeat saw etcd's revision ahead of the last one captured and did nothing: a
    stalled watch left capture (and its lag metric) still while etcd took writes."""
    store = MemoryStore()
    repo, _chains = resumable(store)
    etcd = StallingEtcd()
    options = CaptureOptions(
        backup=BackupOptions(cluster="prod", endpoints=(member_urls(1)[0],), capture_files=False),
        flush_interval=0.05, heartbeat_interval=0.2, spool_dir=tmp_path / "spool", retry_interval=0.05)
    status = CaptureStatus()
    with capturing(Capture(etcd, repo, options, status=status)):
        until(lambda: status.chain is not None and etcd.feeds == 1)
        written = etcd.put("/registry/k", b"v")
        until(lambda: status.behind_since is not None)  # the lag metric shows the stall
        until(lambda: status.last_revision == written)
    assert etcd.feeds >= 2 and status.behind_since is None
    assert any("delivered nothing" in e and f"to {written}" in e for e in status.errors), status.errors


def test_revisions_a_stalled_watch_has_not_delivered_count_in_the_lag(tmp_path: Path) -> None:
    """The lag metric counted only revisions received and not yet stored: through a watch's
    stall it read 0, and the lag alert could not fire."""
    store = MemoryStore()
    repo, _chains = resumable(store)
    etcd = MemoryEtcd()
    status = CaptureStatus()
    capture = Capture(etcd, repo, options_for(tmp_path, 0.5), status=status)
    position = run_module._Position(ChainInfo(BASE.id, "prod", BASE.id, 1, "c1", BASE.finished_at),
                                    Predecessor("base", 1, BASE.id))
    etcd.put("/registry/k", b"v")  # revision 2, which the watch did not deliver
    looked = datetime.now(timezone.utc)
    capture._heartbeat(position)
    assert status.lag_seconds(looked + timedelta(seconds=40)) >= 39


class OneHungMember(MemoryEtcd):
    """The double, with one more endpoint whose member takes any Status call and never answers."""

    HUNG = "http://10.0.0.13:2379"

    def status(self, endpoint: str) -> MemberStatus:
        if endpoint == self.HUNG:
            time.sleep(30)
        return super().status(endpoint)


def test_a_hung_member_holds_capture_up_a_moment_not_a_command_timeout(tmp_path: Path) -> None:
    """etcd's revision (at every idle heartbeat, and on resume) was asked of each member in turn:
    one that hangs held the watch loop for the whole command timeout (10 s) each time."""
    store = MemoryStore()
    repo, _chains = resumable(store)
    etcd = OneHungMember()
    options = CaptureOptions(
        backup=BackupOptions(cluster="prod", endpoints=(OneHungMember.HUNG, member_urls(1)[0]), capture_files=False),
        flush_interval=0.05, spool_dir=tmp_path / "spool", retry_interval=0.05)
    written = etcd.put("/registry/k", b"v")
    started = time.monotonic()
    assert Capture(etcd, repo, options)._etcd_revision() == written
    assert time.monotonic() - started < 5

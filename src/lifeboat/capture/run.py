"""Continuous capture: a base backup, then every revision of etcd as segments in the repository.

One loop, one thread of control (the watch feed has its own reader thread, which stamps
every response with its arrival time):

* start: resume right after the last segment of the newest open chain (no gap, no
  duplicate), or take a base backup and start a new chain;
* follow: read the whole keyspace from the next revision, in passes half a flush interval
  apart (:class:`lifeboat.etcd.watch.LaggingFeed`; ``watch_lag=0``: one live watch); commit a
  segment create-only ``flush_interval`` after its oldest revision may have been written
  (closing it early by what recent commits took) or at ``segment_max_bytes``; while idle,
  record a heartbeat once etcd's revision shows nothing newer exists;
* in the agent, every write is fenced by the leadership (see :meth:`Capture._fenced`);
* when the watch cannot continue (etcd compacted the next revision, the cluster went back
  in time, the spool filled while the repository was down) the chain ends: a gap is recorded
  with its reason and a new base starts a new chain at once;
* uploads run on a thread of their own (:mod:`lifeboat.capture.upload`), fed by a bounded
  queue: the repository slow or down never delays the loop; segments then go to a bounded
  local spool and are uploaded in order later.

``stop`` (SIGTERM in ``lifeboat capture``, losing leadership in the agent) commits what was
received and returns.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from lifeboat.backup.pipeline import BackupOptions, SnapshotSource, take_backup
from lifeboat.capture.resume import Resume, decide_resume
from lifeboat.capture.segmenter import SegmentBuilder, leases_of, revisions_of, room_for_events, smallest_segment
from lifeboat.capture.spool import Spool
from lifeboat.capture.store_look import StoreLook
from lifeboat.capture.upload import NotLeading, SpoolOverflow, Uploader, Waiting
from lifeboat.catalog.age_keys import Recipient, load_recipients
from lifeboat.catalog.chains import ChainInfo, ChainStore, Gap, Heartbeat, segment_name
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.layout import MARKER_KEY
from lifeboat.catalog.timeline import cluster_timeline
from lifeboat.clock import Clock, SystemClock
from lifeboat.config import LifeboatConfig
from lifeboat.catalog.segments import Predecessor, Segment
from lifeboat.errors import (
    AlreadyExists, BackendUnavailable, EtcdUnavailable, LifeboatError, OperationFailed, RepositoryUnavailable,
    UsageError,
)
from lifeboat.etcd.failures import RevisionCompacted
from lifeboat.waits import event_wait
from lifeboat.etcdapi.model import LeaseTimeToLive, ReceivedEvents
from lifeboat.snapshot import SnapshotMeta, read_meta

log = logging.getLogger("lifeboat.capture")

# How often an open segment's loop wakes to check its size and ``stop`` (it sleeps otherwise).
_POLL = 0.25
# A host whose clock is this many seconds behind the time the chain it resumes was last seen
# at says so: what it captures next is stamped earlier than what came before it.
CLOCK_SKEW_NOTED = 1.0
# How long capture waits for the members' Status answers (all asked at once) for etcd's revision.
STATUS_SECONDS = 2.0
# How much earlier than the flush interval to close a segment before any commit was timed.
_FIRST_LEAD = 0.1
# How long a stopping capture waits for the feed's last pass (what etcd had when told to stop).
_LAST_PASS_SECONDS = 10.0
# Encoded segments waiting in memory for the upload thread; past this they wait in the spool.
UPLOAD_QUEUE_BYTES = 8 << 20
# How long the watch loop waits for the store's answer to a look of its own (a listing of
# one prefix, a HEAD): a store that answers takes a fraction of a second.
STORE_LOOK_SECONDS = 5.0


class EventFeed(Protocol):
    """What capture needs of :class:`lifeboat.etcd.watch.WatchFeed`."""

    @property
    def ended(self) -> bool: ...

    def take(self, timeout: float | None = None) -> list[ReceivedEvents]: ...

    def hurry(self) -> int: ...

    def passed(self, ticket: int) -> bool: ...

    def close(self) -> None: ...


class CaptureSource(SnapshotSource, Protocol):
    """The etcd connection as capture uses it."""

    def follow(self, start_revision: int, *, lag: float = 0.0) -> EventFeed: ...

    def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseTimeToLive: ...


@dataclass(frozen=True)
class CaptureOptions:
    backup: BackupOptions  # cluster, endpoints, recipients, zstd level for base backups
    flush_interval: float = 1.0
    segment_max_bytes: int = 16 << 20
    heartbeat_interval: float = 30.0
    spool_dir: Path = Path("/var/lib/lifeboat/capture-spool")
    spool_max_bytes: int = 256 << 20
    retry_interval: float = 2.0
    # Seconds between the watch's passes (see lifeboat.etcd.watch.LaggingFeed); None: half the
    # flush interval; 0: one live watch, each revision sent as it commits.
    watch_lag: float | None = None

    @property
    def lag(self) -> float:
        """Seconds between the watch's passes (0: a live watch)."""
        return self.flush_interval / 2 if self.watch_lag is None else self.watch_lag

    @property
    def cluster(self) -> str:
        return self.backup.cluster

    @property
    def recipients(self) -> Sequence[Recipient]:
        return self.backup.recipients


def capture_options(config: LifeboatConfig, endpoints: tuple[str, ...], cluster: str) -> CaptureOptions:
    """Capture settings from the (validated) config; shared by ``lifeboat capture`` and the agent."""
    c = config.capture
    backup = BackupOptions(
        cluster=cluster, endpoints=endpoints, recipients=tuple(load_recipients(config.encryption.recipients)),
        zstd_level=config.backup.zstd_level, capture_files=config.backup.capture_files, root=config.root,
        tmp_dir=config.backup.tmp_dir, labels={**config.backup.labels, "lifeboat.capture": "base"},
    )
    require_room_for_events(c.segment_max_bytes, backup.recipients)
    spool = c.spool_dir or config.root / "var/lib/lifeboat/capture-spool"
    return CaptureOptions(
        backup=backup, flush_interval=c.flush_interval, segment_max_bytes=c.segment_max_bytes,
        heartbeat_interval=c.heartbeat_interval, spool_dir=spool, spool_max_bytes=c.spool_max_bytes,
        retry_interval=c.retry_interval, watch_lag=0.0 if c.watch == "live" else None,
    )


def require_room_for_events(max_bytes: int, recipients: Sequence[Recipient]) -> None:
    """UsageError when a segment's header and age's header would take more than half of
    ``segment-max-bytes`` (several SSH RSA recipients near the 4 KiB minimum): every revision
    would then be a segment of its own, larger than the setting."""
    envelope = ChainStore.envelope_bytes(recipients)
    if room_for_events(max_bytes, envelope) < max_bytes // 2:
        raise UsageError(f"capture.segment-max-bytes {max_bytes} leaves less than half of a segment for events "
                         f"with {len(recipients)} encryption recipient(s) (age's header: {envelope} bytes); "
                         f"use at least {smallest_segment(envelope) // 1024}KiB")


@dataclass
class CaptureStatus:
    """What capture has done so far; read by ``/metrics`` and the CLI (one writer: the loop)."""

    chain: str | None = None
    last_revision: int = 0  # the last revision in a closed segment (uploaded, or waiting in the queue or spool)
    last_seen: datetime | None = None
    oldest_pending: datetime | None = None  # seen time of the oldest revision not yet in the repository
    # When an idle look found etcd past the last revision captured (revisions the watch has not
    # delivered, a stalled watch), until one arrives: they existed by then at the latest.
    behind_since: datetime | None = None
    segments: int = 0
    events: int = 0
    gaps: int = 0
    bases: int = 0
    spooled: int = 0
    errors: list[str] = field(default_factory=list)
    # Why capture may not write now (it does not lead; another capture holds the cluster's
    # capture lock), None while it may.
    fenced: str | None = None

    def lag_seconds(self, now: datetime) -> float:
        """How long the oldest revision not in the repository has waited, as far as capture
        knows: uncommitted, or in etcd and not delivered by the watch (0 when all are committed)."""
        oldest = min((t for t in (self.oldest_pending, self.behind_since) if t is not None), default=None)
        return max(0.0, (now - oldest).total_seconds()) if oldest else 0.0


class ChainBroken(LifeboatError):
    """The chain can go no further; a gap is recorded and a new base taken."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ChainGone(LifeboatError):
    """The chain's record is no longer in the repository (deleted by hand, by a bucket's expiry
    rule, by an older lifeboat's prune): nothing written to it could be restored, so a new base
    and a new chain are taken; no gap can be recorded in a chain that is gone."""


@dataclass
class _Position:
    info: ChainInfo
    previous: Predecessor


class Capture:
    """The capture loop; :meth:`run` returns once ``stop`` is set (after committing)."""

    def __init__(self, etcd: CaptureSource, repo: BackupRepository, options: CaptureOptions, *,
                 stop: threading.Event | None = None, clock: Clock | None = None,
                 status: CaptureStatus | None = None, fence: Callable[[], bool] | None = None) -> None:
        self.etcd = etcd
        self.repo = repo
        self.chains = repo.chain_store
        self.options = options
        self.stop = stop or threading.Event()
        self.clock: Clock = clock or SystemClock()
        self.status = status or CaptureStatus()
        self.spool = Spool(options.spool_dir / options.cluster, options.spool_max_bytes)
        self._position: _Position | None = None
        self._pending_gap: tuple[str, int, str] | None = None  # chain, last revision, reason
        self._leases: set[int] = set()
        self.fence = fence  # True while this process may write (the agent's leadership)
        self._commit_costs: deque[float] = deque(maxlen=20)  # seconds past their deadline
        self._last_commit = 0.0  # monotonic
        self._check_successor = True
        self._look = StoreLook()
        self._look_failed = False  # the last look for another writer's segment got no answer
        self._uploader: Uploader | None = None
        self._last_note: str | None = None
        self._ahead: int | None = None  # the revision last captured when a heartbeat found etcd past it
        self._watched_base: tuple[str, str] | None = None  # (chain, backup): a restore of it can start there

    @property
    def uploader(self) -> Uploader:
        assert self._uploader is not None, "only while run() runs"
        return self._uploader

    def run(self) -> CaptureStatus:
        self.spool.claim()
        try:
            return self._run()
        finally:
            self.spool.release()

    def _run(self) -> CaptureStatus:
        self._uploader = Uploader(self.chains, self.options.cluster, self.spool, max_queued_bytes=UPLOAD_QUEUE_BYTES,
                                  retry_interval=self.options.retry_interval, fence=self.fence, note=self._note)
        try:
            self._cycles()
        finally:
            self._uploader.close()
            self.status.spooled = self._uploader.spooled
        return self.status

    def _cycles(self) -> None:
        while not self.stop.is_set():
            try:
                self._follow(self._start())
            except SpoolOverflow as overflow:
                self._note(f"capture chain {overflow.chain} ends at revision {overflow.last_revision}: {overflow}")
                self._pending_gap = (overflow.chain, overflow.last_revision, str(overflow))
                self._position = None
            except ChainBroken as broken:
                assert self._position is not None
                log.warning("capture chain %s ends at revision %d: %s", self._position.info.chain,
                            self._position.previous.last_revision, broken.reason)
                self._pending_gap = (self._position.info.chain, self._position.previous.last_revision,
                                     broken.reason)
                self._position = None
            except AlreadyExists as exc:
                log.warning("another capture continued the chain (%s); resuming after the newest segment", exc)
                self._position = None
            except ChainGone as gone:
                self._note(str(gone))
                self.status.gaps += 1  # what its revisions held after the last restorable point
                self._position = None
            except NotLeading as exc:
                self.status.fenced = str(exc)
                self._note(str(exc))
                self._position = None  # whoever leads next resumes from the repository
                self.clock.wait(self.options.retry_interval, self.stop)
            except (BackendUnavailable, OperationFailed) as exc:
                self._note(f"{exc}; retrying in {self.options.retry_interval:g}s")
                self.clock.wait(self.options.retry_interval, self.stop)

    def _note(self, message: str) -> None:
        # The same note again (another capture holds the lock, a retry every few seconds) is
        # logged once at warning level, then at debug until another note or a commit.
        repeated, self._last_note = message == self._last_note, message
        log.log(logging.DEBUG if repeated else logging.WARNING, "capture: %s", message)
        if not repeated:
            self.status.errors = [*self.status.errors[-9:], message]

    # ---- where to start ----

    def _start(self) -> _Position:
        if self.fence is not None and not self.fence():
            raise NotLeading("this agent does not lead; capture waits")
        self.status.fenced = None
        self.uploader.flush()  # the resume below must see every segment taken so far
        self.status.spooled = self.uploader.spooled
        if self._pending_gap is not None:
            chain, last, reason = self._pending_gap
            self.chains.record_gap(self.options.cluster, chain, Gap(reason, last, self.clock.now()))
            self.status.gaps += 1
            self._pending_gap = None
        if self._position is not None:
            return self._position
        # Another capture's chain is seen written within a heartbeat and a segment's flush; twice that is quiet.
        quiet = 2 * (self.options.heartbeat_interval + self.options.flush_interval)
        decision = decide_resume(self.options.cluster, list(self.repo.manifests(self.options.cluster)),
                                 self.chains.chains(self.options.cluster), self._cluster_id(), self.clock.now(), quiet,
                                 recipients=[r.text for r in self.options.recipients])
        if decision.busy is not None:
            raise OperationFailed(decision.busy)  # noted, and tried again after the retry interval
        if decision.gap is not None:
            chain, last, reason = decision.gap
            self.chains.record_gap(self.options.cluster, chain, Gap(reason, last, self.clock.now()))
            self.status.gaps += 1
        position = self._resumed(decision) if decision.info is not None else self._new_chain()
        self._position = position
        self.status.chain = position.info.chain
        self.status.last_revision = position.previous.last_revision
        return position

    def _etcd_revision(self) -> int:
        """The newest revision the members answer within ``STATUS_SECONDS``, asked all at once:
        one after another, a member that hangs held the watch loop for the command timeout."""
        endpoints = self.options.backup.endpoints
        revisions: list[int] = []
        waiting = [len(endpoints)]
        lock = threading.Lock()
        all_answered = threading.Event()

        def ask(endpoint: str) -> None:
            revision = None
            try:
                revision = self.etcd.status(endpoint).revision
            except LifeboatError:
                pass  # down or refusing: the others answer
            finally:
                with lock:
                    if revision is not None:
                        revisions.append(revision)
                    waiting[0] -= 1
                    if not waiting[0]:
                        all_answered.set()

        for endpoint in endpoints:  # each thread ends by its client's timeout: none is left for long
            threading.Thread(target=ask, args=(endpoint,), name="capture-status", daemon=True).start()
        event_wait(all_answered, STATUS_SECONDS)
        with lock:
            if not revisions:
                raise EtcdUnavailable(f"no etcd endpoint answered a status request within {STATUS_SECONDS:g}s")
            return max(revisions)

    def _cluster_id(self) -> str:
        return f"{self.etcd.member_list().cluster_id:x}"

    def _resumed(self, decision: Resume) -> _Position:
        assert decision.info is not None and decision.previous is not None
        last = decision.previous.last_revision
        current = self._etcd_revision()
        if current < last:
            # Same cluster id but an older revision: the cluster was restored from a backup
            # (without a revision bump); its history after ``current`` is not the chain's.
            self._position = _Position(decision.info, decision.previous)
            raise ChainBroken(f"etcd's revision {current} is behind the chain's {last}: "
                              "the cluster was restored or replaced")
        log.info("capture resumes chain %s after revision %d", decision.info.chain,
                 decision.previous.last_revision)
        behind = (decision.last_seen - self.clock.now()).total_seconds() if decision.last_seen else 0.0
        if behind > CLOCK_SKEW_NOTED:
            self._note(f"this host's clock is {behind:.0f} s behind the time chain {decision.info.chain} was last "
                       "seen at, by the capture before this one: the revisions captured next get earlier seen "
                       "times than those before them, which --to-time reads; synchronise the nodes' clocks")
        return _Position(decision.info, decision.previous)

    def _new_chain(self) -> _Position:
        marks: list[SnapshotMeta] = []
        manifest = take_backup(self.etcd, self.repo, self.options.backup, now=self.clock.now,
                               inspect=lambda snapshot: marks.append(read_meta(snapshot)))
        assert manifest.snapshot is not None and manifest.source is not None
        self.status.bases += 1
        revision = marks[0].state_revision(manifest.snapshot.revision)
        info = ChainInfo(chain=manifest.id, cluster=manifest.cluster, base_backup=manifest.id,
                         base_revision=revision, cluster_id=manifest.source.cluster_id,
                         started_at=manifest.finished_at)
        self.chains.start(info)
        self._leases = set()
        log.info("capture starts chain %s at base revision %d", info.chain, info.base_revision)
        return _Position(info, Predecessor("base", revision, manifest.id))

    # ---- following the watch ----

    def _follow(self, position: _Position) -> None:
        start = position.previous.last_revision + 1
        try:
            feed = self.etcd.follow(start, lag=self.options.lag)
        except RevisionCompacted:
            raise ChainBroken(f"etcd compacted revision {start} before capture could read it "
                              "(capture was stopped or fell behind)") from None
        builder = SegmentBuilder(self.options.flush_interval, self.options.segment_max_bytes,
                                 self.chains.envelope_bytes(self.options.recipients))
        self._check_successor = True  # resuming: another writer may have continued the chain
        idle_since = checked_at = self.clock.monotonic()
        try:
            while True:
                if self.stop.is_set():
                    self._last_pass(feed, builder, position)
                    self._commit(position, builder)
                    return
                self.uploader.check()
                self._note_waiting(builder)
                arrived = self._next(feed, builder, position)
                if arrived:
                    self._take(arrived, builder, position)
                    idle_since = self.clock.monotonic()
                elif feed.ended:
                    self._commit(position, builder)
                    raise EtcdUnavailable("the etcd watch ended (member stopped or connection lost)")
                if builder.due(self.clock.now(), self._lead()):
                    self._commit(position, builder, on_time=True)
                elif builder.empty and self.clock.monotonic() - idle_since >= self.options.heartbeat_interval:
                    self._heartbeat(position)
                    idle_since = self.clock.monotonic()
                if self.clock.monotonic() - checked_at >= self.options.heartbeat_interval:
                    self._require_chain(position)
                    checked_at = self.clock.monotonic()
        finally:
            feed.close()

    def _next(self, feed: EventFeed, builder: SegmentBuilder, position: _Position) -> list[ReceivedEvents]:
        """What arrived: wait for a segment's first revision, then sleep until its deadline.

        While a segment is open the loop wakes only at its deadline (and every ``_POLL`` for
        the size limit and ``stop``), not once per event; the feed's reader thread stamps each
        response with its arrival time meanwhile, so the deadline counts from when etcd's
        event arrived, not from when this loop got round to it.
        """
        try:
            if builder.empty:
                return feed.take(_POLL)
            self.clock.wait(min(_POLL, builder.seconds_left(self.clock.now(), self._lead())), self.stop)
            return feed.take(0)
        except RevisionCompacted:
            raise ChainBroken(f"etcd compacted revision {position.previous.last_revision + 1} "
                              "under the watch") from None

    def _last_pass(self, feed: EventFeed, builder: SegmentBuilder, position: _Position) -> None:
        """On stop, read what etcd acknowledged before it: a feed that reads in passes is asked
        for one more at once (for up to ``_LAST_PASS_SECONDS``); a live one has it already. What
        ends the feed meanwhile leaves what was read before it, to be committed."""
        ticket = feed.hurry()
        deadline = self.clock.monotonic() + _LAST_PASS_SECONDS
        while True:
            done = feed.passed(ticket) or feed.ended  # a pass's events are queued before it counts
            try:
                arrived = feed.take(0 if done else _POLL)
            except LifeboatError as exc:
                self._note(f"stopping: the last read of etcd failed: {exc}")
                return
            self._take(arrived, builder, position)
            if done or self.clock.monotonic() > deadline:
                return

    def _lead(self) -> float:
        """How much earlier than ``flush_interval`` to close a segment: what recent commits took
        beyond their deadline (waking, encoding, writing), at most half the interval."""
        taken = max(self._commit_costs, default=_FIRST_LEAD)
        return min(taken, self.options.flush_interval / 2)

    def _take(self, arrived: list[ReceivedEvents], builder: SegmentBuilder, position: _Position) -> None:
        """Add what arrived to the open segment, committing it first whenever the next revision
        would take it past ``segment_max_bytes`` (a burst, or a backlog caught up at once)."""
        if arrived:
            self.status.behind_since = None  # the watch delivers: what it has not yet is ordinary lag
        for revision, written_after in revisions_of(arrived):
            # A lease's TTL goes in the segment open when it is learnt (maybe the one committed
            # next, before the revision naming it): a restore reads every TTL up to its point.
            for lease in leases_of([revision]) - self._leases:
                self._learn_lease(lease, builder)
            if not builder.add(revision, written_after):
                self._commit(position, builder)
                builder.add(revision, written_after)
        self._note_waiting(builder)

    def _note_waiting(self, builder: SegmentBuilder) -> None:
        """The status of what is not in the repository yet: in the uploader, or still open."""
        self.status.spooled = self.uploader.spooled
        self.status.oldest_pending = self.uploader.oldest_waiting() or (
            None if builder.empty else builder.revisions[0].seen)

    def _learn_lease(self, lease: int, builder: SegmentBuilder) -> None:
        """Record a lease's granted TTL: lease grants are not watch events (etcd's watch API)."""
        try:
            found = self.etcd.lease_time_to_live(lease)
        except LifeboatError as exc:
            self._note(f"could not read lease {lease:x}: {exc}")
            return
        self._leases.add(lease)
        if found.ttl >= 0 and found.granted_ttl > 0:
            builder.leases[lease] = found.granted_ttl

    def _require_chain(self, position: _Position) -> None:
        """ChainGone when the chain's record is no longer in the repository, ChainBroken when
        every backup a restore in it could start from is (a HEAD each; a repository that does
        not answer, within ``STORE_LOOK_SECONDS``, is not taken for one that lost them)."""
        def look() -> tuple[bool, bool, bool]:
            there = self.chains.recorded(self.options.cluster, position.info.chain)
            # The repository's own marker gone too: a mount (disk, NFS) that is not there, not a deletion.
            unmounted = not there and self.repo.store.stat(MARKER_KEY) is None
            return there, unmounted, not there or self._base_of(position) is not None

        try:
            there, unmounted, based = self._look("a look for the chain's record", look, STORE_LOOK_SECONDS)
        except BackendUnavailable:
            return
        if unmounted:
            url = self.repo.store.url
            self._note(f"the repository {url} does not hold its marker: not mounted? capture goes on with "
                       f"chain {position.info.chain}; its segments wait in the local spool until the marker is back")
            self.uploader.hold_while(lambda: self.repo.store.stat(MARKER_KEY) is None,
                                     f"the repository {url} does not hold its marker (a disk or share not mounted?)")
        elif not there:
            raise ChainGone(f"capture chain {position.info.chain} was deleted from the repository while capture "
                            f"wrote it (at revision {position.previous.last_revision}); taking a new base backup "
                            "and starting a new chain")
        elif not based:
            raise ChainBroken(f"its base backup {position.info.base_backup} was deleted from the repository while "
                              "capture wrote the chain, and no full backup was written from it: no restore can "
                              "start from it; taking a new base backup and starting a new chain")

    def _base_of(self, position: _Position) -> str | None:
        """A backup a restore in the chain can start from, if one is left (one HEAD while it stays).

        The chain's own base, or once it is deleted (a fold into a later base: a full backup
        written from the chain or taken while it captured), the newest base the timeline finds
        for the chain. None: every one of them is deleted.
        """
        chain, cluster = position.info.chain, self.options.cluster
        if self._watched_base is None or self._watched_base[0] != chain:
            self._watched_base = (chain, position.info.base_backup)
        if self.repo.store.stat(self.repo.layout.manifest_key(cluster, self._watched_base[1])) is not None:
            return self._watched_base[1]
        bases = [b for w in cluster_timeline(self.repo, cluster).windows
                 if w.chain is not None and w.chain.info.chain == chain for b in w.bases()]
        if not bases:
            return None
        newest = max(bases, key=lambda b: b.revision).manifest.id
        self._watched_base = (chain, newest)
        return newest

    def _heartbeat(self, position: _Position) -> None:
        """While idle, record that etcd is still at the chain's last revision.

        Every revision changes a key, and the watch covers every key: when etcd's revision is
        the last one committed, nothing after it exists yet.
        """
        seen = self.clock.now()
        try:
            revision = self._etcd_revision()
        except BackendUnavailable as exc:
            self._note(f"heartbeat skipped: {exc}")
            return
        last = position.previous.last_revision
        if revision == last:
            self._ahead = self.status.behind_since = None
            self.uploader.beat(position.info.chain, Heartbeat(revision, seen))
        elif revision > last:
            self.status.behind_since = self.status.behind_since or seen
            # Revisions the watch has not delivered: a write may race this look, not a whole
            # idle interval more. Twice in a row with nothing received between, the watch is
            # stalled (a member that hangs and keeps the stream open): follow etcd again.
            if self._ahead == last:
                self._ahead = None
                raise EtcdUnavailable(f"the watch delivered nothing for {2 * self.options.heartbeat_interval:g}s "
                                      f"while etcd went from revision {last} to {revision}; following it again")
            self._ahead = last

    def _commit(self, position: _Position, builder: SegmentBuilder, *, on_time: bool = False) -> None:
        if builder.empty:
            return
        assert builder.since is not None
        deadline = builder.since.timestamp() + self.options.flush_interval - self._lead()
        segment = builder.close(self.options.cluster, position.info.chain, position.previous)
        encrypted = bool(self.options.recipients)
        name = segment_name(segment, encrypted)
        encoding = self.clock.monotonic()
        data = self.chains.encoded(segment, self.options.recipients, self.options.backup.zstd_level)
        looked = self._fenced(position, segment)
        self.uploader.submit(Waiting(position.info.chain, name, data, segment.last_revision), checked=looked)
        self.status.spooled = self.uploader.spooled
        log.debug("segment %s committed: %d events, %.3fs to encode and hand to the uploader", name,
                  segment.event_count, self.clock.monotonic() - encoding)
        position.previous = Predecessor("segment", segment.last_revision, name)
        self._committed(segment)
        self._last_commit = self.clock.monotonic()
        if on_time:
            self._commit_costs.append(max(0.0, self.clock.now().timestamp() - deadline))

    def _fenced(self, position: _Position, segment: Segment) -> bool:
        """Refuse to write a segment that could fork the chain; False when the look for
        another writer's segment could not be made (the segment then waits in the spool,
        whose upload makes it first).

        Segment names are create-only but carry the last revision and times, so two writers
        continuing one chain from the same segment would both succeed. Hence, before a write:
        the agent's leadership (its lease still held, see ``Election.still_leads``), and after
        a resume or a pause (no commit for a while) a look for a segment that already follows
        ``previous``: someone else continued this chain, so resume after theirs.
        """
        if self.fence is not None and not self.fence():
            raise NotLeading("this agent no longer leads; the segment was not written")
        paused = self.clock.monotonic() - self._last_commit > 2 * self.options.flush_interval + 1
        if self._check_successor or paused:
            try:
                following = self._look(
                    "a listing of the chain's next segments",
                    lambda: self.chains.segments_from(self.options.cluster, position.info.chain, segment.first_revision),
                    STORE_LOOK_SECONDS)
            except RepositoryUnavailable as exc:
                if not self._look_failed:  # once, not at each commit of the outage
                    self._note(f"{exc}; segments wait in the local spool")
                self._look_failed = self._check_successor = True  # look again before the next write
                return False  # the segment goes to the spool
            self._look_failed = False
            if following:
                raise AlreadyExists(f"segment {following[0]} already continues chain {position.info.chain} "
                                    f"after revision {position.previous.last_revision}")
            self._check_successor = False
        return True

    def _committed(self, segment: Segment) -> None:
        self._last_note = None  # capture works again: the next trouble is news
        s = self.status
        s.last_revision = segment.last_revision
        s.last_seen = segment.last_seen
        s.oldest_pending = self.uploader.oldest_waiting()
        s.segments += 1
        s.events += segment.event_count

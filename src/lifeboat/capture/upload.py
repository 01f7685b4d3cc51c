"""Uploading committed segments on a thread of their own, so that a slow or unreachable object
store never holds up the capture loop, nor makes the events it keeps receiving pile up.

Capture hands each encoded segment to :meth:`Uploader.submit`, which does not wait for the
store: the segment waits in memory, in a queue of at most ``max_queued_bytes``, or on disk in
the bounded local spool. What capture holds in memory for uploads is thus bounded by the
queue's limit, whatever the store does; past the spool's limit the chain ends with a gap.

Order: the queue and the spool are never both waiting. A segment goes to the spool when the
spool holds any, or when the queue is full, in which case the queue goes to the spool first
(oldest first); the queue goes to the spool too when an upload fails. The uploader empties
the queue, or the spool, oldest first. So the repository receives the chain in order, and a
crash loses at most the newest segments, from memory, with nothing after them on disk: the
capture that resumes reads them again from etcd's history.

The chain's heartbeat (written while capture is idle) goes through the uploader too, after
every segment before it: it vouches for the chain's last revision, so it must not reach the
repository before that revision's segment, and writing it must not hold up the loop either.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from lifeboat.capture.spool import Spool, SpoolFull, SpoolUnreadable
from lifeboat.catalog.chains import ChainStore, Heartbeat, parse_segment_name
from lifeboat.errors import AlreadyExists, OperationFailed, RepositoryUnavailable
from lifeboat.waits import condition_wait_for

log = logging.getLogger("lifeboat.capture")


class NotLeading(OperationFailed):
    """This agent lost its leadership; capture writes nothing more until it leads again."""


class SpoolOverflow(OperationFailed):
    """The repository was unavailable and the spool filled: the chain ends at ``last_revision``,
    the last revision uploaded or spooled (what came after it was dropped)."""

    def __init__(self, message: str, chain: str, last_revision: int) -> None:
        super().__init__(message)
        self.chain = chain
        self.last_revision = last_revision


@dataclass(frozen=True)
class Waiting:
    """One encoded segment not yet in the repository."""

    chain: str
    name: str
    data: bytes
    last_revision: int


class Uploader:
    """The upload thread and what waits for it (see the module's docstring for the order)."""

    def __init__(self, chains: ChainStore, cluster: str, spool: Spool, *, max_queued_bytes: int,
                 retry_interval: float, fence: Callable[[], bool] | None = None,
                 note: Callable[[str], None] = log.warning) -> None:
        self.chains = chains
        self.cluster = cluster
        self.spool = spool
        self.max_queued_bytes = max_queued_bytes
        self.retry_interval = retry_interval
        self.fence = fence
        self.note = note
        self._changed = threading.Condition()
        self._queue: deque[Waiting] = deque()
        self._queued_bytes = 0
        self._spooled = len(spool)
        self._failure: BaseException | None = None  # for the capture loop to raise, once
        self._failures = 0  # uploads that failed so far
        self._down = False  # the last upload failed: the outage was noted, the next success ends it
        self._retry_now = False  # flush or close asks a waiting retry not to wait out retry_interval
        self._heartbeat: tuple[str, Heartbeat] | None = None  # chain and heartbeat to write once nothing waits
        self._held: tuple[Callable[[], bool], str] | None = None  # see hold_while
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="capture-upload", daemon=True)
        self._thread.start()

    # ---- the capture loop's side ----

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def spooled(self) -> int:
        return self._spooled

    def submit(self, segment: Waiting, *, checked: bool = True) -> None:
        """Hand over one segment; raises what the uploader ran into since the last call
        (:class:`SpoolOverflow`, :class:`NotLeading`), and then takes nothing.

        ``checked=False``: capture could not look whether another writer's segment already
        follows the chain; the segment goes to the spool, whose upload looks first."""
        with self._changed:
            self._raise_failure()
            if checked and self._spooled == 0 and self._queued_bytes + len(segment.data) <= self.max_queued_bytes:
                self._queue.append(segment)
                self._queued_bytes += len(segment.data)
            else:
                self._to_spool(segment)
                self._raise_failure()
            self._changed.notify_all()

    def beat(self, chain: str, heartbeat: Heartbeat) -> None:
        """Write ``chain``'s heartbeat once the segments handed over before it are in the
        repository (a newer one replaces one still waiting; one that fails is dropped)."""
        with self._changed:
            self._heartbeat = (chain, heartbeat)
            self._changed.notify_all()

    def oldest_waiting(self) -> datetime | None:
        """When the oldest revision not yet in the repository was seen (None: nothing waits)."""
        with self._changed:
            names = [self._queue[0].name] if self._queue else []
            if not names and self._spooled:
                names = self.spool.names()[:1]
        ref = parse_segment_name(names[0]) if names else None
        return ref.first_seen if ref is not None else None

    def hold_while(self, absent: Callable[[], bool], why: str) -> None:
        """Upload nothing while ``absent()`` says the repository is not there (asked before each
        try, every ``retry_interval``): what is handed over waits in the spool meanwhile. For a
        repository whose marker is gone (a share not mounted), where a write would land on the
        mount point and be hidden once the share is back."""
        with self._changed:
            self._held = (absent, why)
            self._changed.notify_all()

    def check(self) -> None:
        """Raise what the uploader ran into (as :meth:`submit` would) without handing anything over."""
        with self._changed:
            self._raise_failure()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything waiting is in the repository; RepositoryUnavailable if an
        upload fails meanwhile (what waits stays in the spool)."""
        with self._changed:
            failures = self._failures
            self._retry_now = True  # an upload waiting to be retried is tried now
            self._changed.notify_all()
            # In slices: `lifeboat capture` flushes in its main thread, whose SIGTERM handler must run.
            condition_wait_for(self._changed, lambda: self._failure is not None or self._failures != failures
                               or not (self._queue or self._spooled), timeout)
            self._raise_failure()
            if self._queue or self._spooled:
                raise RepositoryUnavailable(f"{self._spooled + len(self._queue)} capture segment(s) wait "
                                            "for the repository")

    def close(self) -> None:
        """Upload what waits (one try each), spool what cannot be, and end the thread."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join()

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _to_spool(self, segment: Waiting | None = None) -> None:
        """The queue, then ``segment``, to the spool (holding the lock). On SpoolFull nothing
        more is taken: the failure names the last revision kept."""
        waiting = [*self._queue, *([segment] if segment else [])]
        if not waiting:
            return
        kept: Waiting | None = None
        try:
            for item in waiting:
                self.spool.add(item.chain, item.name, item.data)
                self._spooled += 1
                kept = item
        except SpoolFull as full:
            first = waiting[0]
            self._failure = SpoolOverflow(f"the repository was unavailable and {full}",
                                          first.chain, kept.last_revision if kept else _revision_before(first))
        self._queue.clear()
        self._queued_bytes = 0

    # ---- the upload thread ----

    def _run(self) -> None:
        try:
            self._upload()
        except BaseException as exc:  # a bug: the capture loop raises it, and nothing waits unsaved
            with self._changed:
                self._to_spool()
                self._failure = self._failure or exc
                self._changed.notify_all()

    def _upload(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._closing or (
                    bool(self._queue or self._spooled or self._heartbeat) and self._failure is None))
                if self._failure is not None or not (self._queue or self._spooled) and (
                        self._closing or self._heartbeat is None):
                    self._to_spool()  # closing: nothing more can go up
                    return
                head = self._queue[0] if self._queue else None
                beat = self._heartbeat if head is None and not self._spooled else None
                closing, held = self._closing, self._held
            try:
                if self.fence is not None and not self.fence():
                    raise NotLeading("this agent no longer leads; its segments wait in the spool")
                if held is not None:
                    if held[0]():
                        raise RepositoryUnavailable(held[1])
                    with self._changed:
                        if self._held is held:
                            self._held = None
                if head is not None:
                    self._put(head)
                elif beat is not None:
                    self._write_heartbeat(*beat)
                else:
                    self.spool.drain(self._upload_spooled)
            except SpoolUnreadable as lost:  # the chain has a hole there: it ends before the lost segment
                ref = parse_segment_name(lost.name)
                with self._changed:
                    self._failure = SpoolOverflow(f"{lost}", lost.chain, ref.first_revision - 1 if ref else 0)
                    self._spooled = len(self.spool)
                    self._changed.notify_all()
                continue
            except (RepositoryUnavailable, OperationFailed) as exc:  # NotLeading too; a full disk, a 500
                self._failed(exc, wait=not closing)
                if closing:
                    return
                continue
            with self._changed:
                if self._down and (head is not None or beat is None):
                    self._down = False
                    log.info("capture: the repository takes segments again")
                if head is not None and self._queue and self._queue[0] is head:
                    self._queue.popleft()
                    self._queued_bytes -= len(head.data)
                if beat is not None and self._heartbeat is beat:
                    self._heartbeat = None
                self._spooled = len(self.spool)
                self._changed.notify_all()

    def _failed(self, exc: RepositoryUnavailable | OperationFailed, *, wait: bool) -> None:
        """Spool the queue; retry after ``retry_interval``, or sooner when :meth:`flush` asks.

        A segment handed over meanwhile goes to the spool and waits: the capture loop closes
        one a second, and trying the store again for each would ignore ``retry_interval``.
        The outage is noted once, at its first failure, not at every try.
        """
        with self._changed:
            if isinstance(exc, NotLeading):
                self._failure = exc
            elif not self._down:
                what = "repository unavailable" if isinstance(exc, RepositoryUnavailable) else "an upload failed"
                self.note(f"{what}, spooling segments locally until it takes them again: {exc}")
            self._down = not isinstance(exc, NotLeading)
            self._to_spool()
            self._spooled = len(self.spool)
            self._failures += 1
            self._changed.notify_all()
            if wait:
                self._retry_now = False
                self._changed.wait_for(lambda: self._retry_now or self._closing, self.retry_interval)

    def _write_heartbeat(self, chain: str, heartbeat: Heartbeat) -> None:
        try:
            self.chains.beat(self.cluster, chain, heartbeat)
        except RepositoryUnavailable as exc:
            self.note(f"heartbeat not written: {exc}")  # the next idle interval writes another

    def _put(self, item: Waiting) -> None:
        try:
            self.chains.put_encoded(self.cluster, item.chain, item.name, item.data)
        except AlreadyExists:
            pass  # this very segment, uploaded from the spool as the queue went there

    def _upload_spooled(self, chain: str, name: str, data: bytes) -> None:
        ref = parse_segment_name(name)
        if ref is not None and any(other != name for other in self.chains.segments_from(
                self.cluster, chain, ref.first_revision)):
            # Another capture (the agent that led while this one could not write) continued
            # the chain from the same place: its segments hold these revisions already.
            log.warning("spooled segment %s dropped: chain %s was continued by another capture", name, chain)
            return
        try:
            self.chains.put_encoded(self.cluster, chain, name, data)
        except AlreadyExists:
            pass  # uploaded before a crash removed it from the spool


def _revision_before(segment: Waiting) -> int:
    ref = parse_segment_name(segment.name)
    assert ref is not None
    return ref.first_revision - 1

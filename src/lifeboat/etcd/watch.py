"""Cancellable streams of changes from one etcd watcher: per event, or in arrival-stamped batches."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any, Self

import grpc

from lifeboat.clock import Clock
from lifeboat.errors import EtcdUnavailable, LifeboatError, OperationFailed
from lifeboat.etcd.channels import Stubs
from lifeboat.etcd.decode import watch_event
from lifeboat.etcd.failures import RevisionCompacted, translate
from lifeboat.etcdapi.model import ReceivedEvents, WatchEvent
from lifeboat.etcdapi.proto import rpc_pb2

_END = object()
# What the capture feed holds at most before it stops reading from etcd (see WatchFeed).
FEED_MAX_WAITING_BYTES = 16 << 20


def _with_size(data: bytes) -> tuple[int, Any]:
    """A watch response with the size it had on the wire (what the feed's bound counts)."""
    return len(data), rpc_pb2.WatchResponse.FromString(data)


class WatchStream:
    """Events of one watcher, in revision order. Iterate it; ``close()`` cancels it.

    A reader thread takes responses off the gRPC stream, so ``next_event(timeout)`` can
    wait a bounded time. A start revision etcd already compacted raises
    :class:`RevisionCompacted` when the watch is created or when iteration reaches it.
    """

    def __init__(self, stubs: Stubs, create: rpc_pb2.WatchCreateRequest, created_timeout: float) -> None:
        self.endpoint = stubs.endpoint.url
        self._requests: queue.Queue[Any] = queue.Queue()
        self._requests.put(rpc_pb2.WatchRequest(create_request=create))
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._pending: list[WatchEvent] = []
        self._closed = False
        self._ended = False
        self._call = stubs.watch.Watch(self._outgoing())
        self._reader = threading.Thread(target=self._read, name="etcd-watch", daemon=True)
        self._reader.start()
        first = self._take(created_timeout)
        if first is None:
            self.close()
            raise OperationFailed(f"watch: etcd at {self.endpoint} did not confirm the watch in time; retry")
        self.watch_id: int = first.watch_id
        self.revision: int = first.header.revision
        # The store revision etcd last vouched for with a progress notification: every event
        # up to it was delivered (etcd's WatchProgressRequest, 3.4+).
        self.progress_revision: int | None = None
        self._absorb(first)

    def _outgoing(self) -> Iterator[Any]:
        while True:
            item = self._requests.get()
            if item is _END:
                return
            yield item

    def _read(self) -> None:
        try:
            for response in self._call:
                self._inbox.put(response)
        except grpc.RpcError as error:
            if not self._closed and error.code() != grpc.StatusCode.CANCELLED:
                self._inbox.put(translate("watch", self.endpoint, error))
        self._inbox.put(_END)

    def _take(self, timeout: float | None) -> Any:
        """The next response; None on timeout or at the end of the stream."""
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _END:
            self._inbox.put(_END)
            self._ended = True
            return None
        if isinstance(item, LifeboatError):
            raise item
        return item

    def _absorb(self, response: Any) -> None:
        if response.canceled:
            self.close()
            if response.compact_revision:
                raise RevisionCompacted(
                    f"watch: etcd compacted past the start revision (oldest kept: "
                    f"{response.compact_revision}); watch from a newer revision"
                )
            if response.cancel_reason:
                raise OperationFailed(f"watch cancelled by etcd at {self.endpoint}: {response.cancel_reason}")
            return
        if not response.events and not response.created:
            self.progress_revision = response.header.revision
        self._pending.extend(watch_event(e) for e in response.events)

    def next_event(self, timeout: float | None = None) -> WatchEvent | None:
        """The next event, or None when none came within ``timeout`` or the watch ended."""
        while not self._pending:
            if self._closed:
                return None
            response = self._take(timeout)
            if response is None:
                return None
            self._absorb(response)
        return self._pending.pop(0)

    def next_batch(self, timeout: float | None = None) -> list[WatchEvent] | None:
        """The events of the next response that carries any; None on timeout or at the end.

        etcd never splits one revision's events over two responses (a transaction is
        delivered whole, server/mvcc/watchable_store.go), so a batch ends on a revision boundary.
        """
        if self._pending:
            batch, self._pending = self._pending, []
            return batch
        while not self._closed:
            response = self._take(timeout)
            if response is None:
                return None
            self._absorb(response)
            if self._pending:
                batch, self._pending = self._pending, []
                return batch
            if timeout is not None:
                return []  # a progress notification: nothing new, but etcd answered
        return None

    @property
    def ended(self) -> bool:
        """The stream is over: closed here, or etcd (or the connection) ended it."""
        return self._closed or self._ended

    def request_progress(self) -> None:
        """Ask etcd for a progress notification (answered when the watcher is in sync)."""
        if not self._closed:
            self._requests.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    def __iter__(self) -> Iterator[WatchEvent]:
        while (event := self.next_event()) is not None:
            yield event

    def close(self) -> None:
        """Cancel the watch; iteration ends once buffered events are consumed."""
        if self._closed:
            return
        self._closed = True
        self._requests.put(_END)
        self._call.cancel()

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_WATCH_METHOD = "/etcdserverpb.Watch/Watch"


def _watch_call(channel: grpc.Channel) -> Any:
    """The watch called as a server stream (see :class:`WatchFeed`)."""
    return channel.unary_stream(_WATCH_METHOD, request_serializer=rpc_pb2.WatchRequest.SerializeToString,
                                response_deserializer=_with_size)


class _Arrivals:
    """What both feeds share: a reader thread queues arrival-stamped responses, bounded in bytes;
    :meth:`take` hands over everything queued at once.

    While responses of more than ``max_waiting_bytes`` (as received) wait, the reader stops
    reading, gRPC's flow control stops etcd's sending, and etcd treats the watch as a slow
    watcher: it keeps no events for it but reads them again from its store once the stream
    drains (mvcc/watchable_store.go, victims and unsynced watchers), or cancels the watch with a
    compaction when it compacted them meanwhile. A stalled reader thus costs a bounded amount of
    memory here, never lost events.
    """

    def __init__(self, endpoint: str, clock: Clock, max_waiting_bytes: int) -> None:
        self.endpoint = endpoint
        self._clock = clock
        self._inbox: deque[tuple[int, Any]] = deque()  # (bytes as received, item)
        self.waiting_bytes = 0
        self.max_waiting_bytes = max_waiting_bytes
        self._room = threading.Condition()
        self._arrived = threading.Event()
        self._started = threading.Event()
        self._closed = False
        self._ended = False

    def _push(self, item: Any, size: int = 0) -> None:
        if size:
            with self._room:  # wait for room before taking more from the stream
                self._room.wait_for(lambda: self.waiting_bytes < self.max_waiting_bytes or self._closed)
                self.waiting_bytes += size
        self._inbox.append((size, item))
        if not self._arrived.is_set():  # one wake-up for a burst, not one per response
            self._arrived.set()

    def _cancelled(self, response: Any) -> Any:
        if response.compact_revision:
            return RevisionCompacted(f"watch: etcd compacted past the start revision (oldest kept: "
                                     f"{response.compact_revision}); watch from a newer revision")
        if response.cancel_reason:
            return OperationFailed(f"watch cancelled by etcd at {self.endpoint}: {response.cancel_reason}")
        return _END

    def _failed(self, error: grpc.RpcError) -> None:
        """Queue what ended the stream, unless it was this side closing it."""
        if not self._closed and error.code() != grpc.StatusCode.CANCELLED:
            self._push(translate("watch", self.endpoint, error))

    def _end(self) -> None:
        """The reader is done: mark the end, and free a constructor still waiting for the create."""
        self._push(_END)
        self._started.set()

    def _confirmed(self, created_timeout: float) -> None:
        """Wait for etcd's answer to the (first) create request; OperationFailed without it."""
        if not self._started.wait(created_timeout):
            self.close()
            raise OperationFailed(f"watch: etcd at {self.endpoint} did not confirm the watch in time; retry")

    def take(self, timeout: float | None = None) -> list[ReceivedEvents]:
        """Everything that arrived, oldest first; waits up to ``timeout`` while nothing has.

        Empty on timeout and once the watch ended (see :attr:`ended`); raises what ended it
        (:class:`RevisionCompacted`, an unavailable etcd) after handing over what came before.
        """
        if not self._inbox and not self.ended:
            self._arrived.wait(timeout)
        self._arrived.clear()  # before draining: a response queued from now on sets it again
        taken: list[ReceivedEvents] = []
        freed = 0
        try:
            while self._inbox:
                size, item = self._inbox[0]
                if item is _END:
                    self._ended = True
                    break
                if isinstance(item, LifeboatError):
                    if taken:
                        break
                    self._inbox.popleft()
                    self._inbox.appendleft((0, _END))
                    self._ended = True
                    raise item
                self._inbox.popleft()
                taken.append(item)
                freed += size
        finally:
            if freed:
                with self._room:
                    self.waiting_bytes -= freed
                    self._room.notify_all()
        return taken

    @property
    def ended(self) -> bool:
        """The feed is over: closed here, or etcd (or the connection) ended it."""
        return self._closed or self._ended

    def hurry(self) -> int:
        """Ask for every revision etcd has now; a ticket for :meth:`passed`. A live watch is sent
        each revision as it commits: nothing to ask."""
        return 0

    def passed(self, ticket: int) -> bool:
        """Whether what :meth:`hurry` asked for was queued (to be taken)."""
        return True

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _closing(self) -> bool:
        """Mark the feed closed (False when it already was) and free a reader waiting for room."""
        if self._closed:
            return False
        self._closed = True
        with self._room:
            self._room.notify_all()
        return True


class WatchFeed(_Arrivals):
    """Every event from a start revision, each response stamped with the time it arrived.

    For a reader that wakes on its own schedule (capture closes a segment every flush
    interval), not once per event: a reader thread decodes each response as it arrives and
    queues it with its arrival time; :meth:`take` hands over everything queued at once.

    The watch is called as a server stream: one create request, then the request side is
    closed. etcd's watch server ends only its receive loop on that end of input and keeps
    the watch (server/etcdserver/api/v3rpc/watch.go, recvLoop returns nil on io.EOF), and
    grpc reads such a stream on the iterating thread alone (its single-threaded server
    stream), where a bidirectional stream also wakes grpc's polling thread for each
    response: half the CPU per response, measured at 2,000 events/s. Nothing can be sent on
    it afterwards (no progress request): ask etcd's revision with a Status call instead.

    The watch is *synced* once it has caught up: etcd sends each revision as it commits it,
    on the path of the put (see :class:`LaggingFeed` for what that costs the writers).
    """

    def __init__(self, channel: grpc.Channel, endpoint: str, create: rpc_pb2.WatchCreateRequest,
                 created_timeout: float, clock: Clock, max_waiting_bytes: int = FEED_MAX_WAITING_BYTES) -> None:
        super().__init__(endpoint, clock, max_waiting_bytes)
        self.revision = 0  # the store revision when the watch was created
        self._channel = channel
        self._call = _watch_call(channel)(rpc_pb2.WatchRequest(create_request=create))
        self._reader = threading.Thread(target=self._read, name="etcd-watch-feed", daemon=True)
        self._reader.start()
        self._confirmed(created_timeout)

    def _read(self) -> None:
        try:
            for size, response in self._call:
                received = self._clock.now().timestamp()
                if response.canceled:
                    self._push(self._cancelled(response))
                    break
                if response.created:
                    self.revision = response.header.revision
                    self._started.set()
                if response.events:
                    self._push(ReceivedEvents(received, tuple(watch_event(e) for e in response.events)), size)
        except grpc.RpcError as error:
            self._failed(error)
        self._end()

    def close(self) -> None:
        """Cancel the watch and close its channel."""
        if self._closing():
            self._call.cancel()
            self._channel.close()


class LaggingFeed(_Arrivals):
    """Every event from a start revision, read in passes ``lag`` seconds apart.

    Why: a watcher etcd has caught up (*synced*) is sent each revision as the put commits it,
    on the put's path; a watcher behind (*unsynced*) is served from etcd's store by a background
    loop every 100 ms, many revisions a message (mvcc/watchable_store.go, syncWatchersLoop). At
    2,000 puts/s here passes half a second apart took a quarter of a synced watch's CPU and
    left etcd's put latency within noise of no watcher (docs/benchmarks.md).

    A pass is a watch created from the first revision not read yet. etcd's answer to the create
    carries the revision its store was at (v3rpc/watch.go: the created response's header), so
    every revision up to it exists and will be sent; the pass reads until it has that one, then
    cancels its stream (the channel stays). A revision read in a pass did not exist when the
    previous, complete, pass was asked for: each response carries that time as
    ``written_after``, and its arrival time as when it was seen.

    A pass ends at its deadline (``pass_timeout``: a backlog, a slow reader) and the next reads
    on from where it stopped, with no ``written_after``. etcd down, the watch refused
    (compacted), or a pass that etcd does not confirm within ``created_timeout`` (a member that
    hangs: etcd confirms a watch it can serve at once, and waiting out the pass's deadline would
    hold capture that long while the other members take writes): the feed ends with that
    error, as a :class:`WatchFeed` does.
    """

    def __init__(self, channel: grpc.Channel, endpoint: str, create: rpc_pb2.WatchCreateRequest, lag: float,
                 created_timeout: float, clock: Clock, max_waiting_bytes: int = FEED_MAX_WAITING_BYTES,
                 pass_timeout: float | None = None) -> None:
        super().__init__(endpoint, clock, max_waiting_bytes)
        self.revision = 0  # the store revision when the first pass began
        self.lag = lag
        self._create = create
        self._channel = channel
        self._start = _watch_call(channel)
        self._pass_timeout = pass_timeout or 3 * created_timeout
        self._created_timeout = created_timeout
        self._unconfirmed = False  # the pass under way was cancelled for want of etcd's confirmation
        self._lock = threading.Lock()  # close() against a pass being opened
        self._call: Any = None
        self._hurried = threading.Event()  # start the next pass now (hurry, close)
        self._passes = threading.Lock()
        self._began = self._complete = 0  # passes begun; the last one that read all it asked for
        self._reader = threading.Thread(target=self._read, name="etcd-lagging-feed", daemon=True)
        self._reader.start()
        self._confirmed(created_timeout)

    def _read(self) -> None:
        following, after = self._create.start_revision, None
        try:
            while not self._closed:
                asked, began = self._clock.now().timestamp(), self._clock.monotonic()
                with self._passes:
                    self._began += 1
                    number = self._began
                passed = self._pass(following, after)
                if passed is None:
                    break
                following, complete = passed
                after = asked if complete else None
                if complete:
                    with self._passes:
                        self._complete = number
                self._hurried.wait(max(0.0, self.lag - (self._clock.monotonic() - began)))
                self._hurried.clear()
        except grpc.RpcError as error:
            self._failed(error)
        self._end()

    def hurry(self) -> int:
        """Start the next pass now (SIGTERM: what etcd acknowledged before it should be committed);
        its number, for :meth:`passed`. A pass under way may have begun before what was just
        written: only the next one surely reads it."""
        with self._passes:
            ticket = self._began + 1
        self._hurried.set()
        return ticket

    def passed(self, ticket: int) -> bool:
        """Whether pass ``ticket`` read all it asked for (its events are queued)."""
        with self._passes:
            return self._complete >= ticket

    def _pass(self, following: int, after: float | None) -> tuple[int, bool] | None:
        """One pass from revision ``following``: the first revision it did not read, and whether it
        read all etcd had when it began (False: cut at its deadline); None when the feed ended."""
        create = rpc_pb2.WatchCreateRequest()
        create.CopyFrom(self._create)
        create.start_revision = following
        with self._lock:
            if self._closed:
                return None
            call = self._call = self._start(rpc_pb2.WatchRequest(create_request=create),
                                            timeout=self._pass_timeout)
        target: int | None = None
        confirmed = threading.Event()
        watchdog = threading.Timer(self._created_timeout, self._give_up, (call, confirmed))
        watchdog.daemon = True
        watchdog.start()
        try:
            for size, response in call:
                received = self._clock.now().timestamp()
                if response.canceled:
                    self._push(self._cancelled(response))
                    return None
                if response.created:
                    confirmed.set()
                    target = response.header.revision
                    if not self._started.is_set():
                        self.revision = target
                        self._started.set()
                if response.events:
                    events = tuple(watch_event(e) for e in response.events)
                    self._push(ReceivedEvents(received, events, after), size)
                    following = events[-1].kv.mod_revision + 1
                if target is not None and following > target:
                    return following, True
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and target is not None and not self._closed:
                return following, False
            if self._unconfirmed and not self._closed:
                self._push(EtcdUnavailable(f"watch: etcd at {self.endpoint} did not confirm a watch within "
                                           f"{self._created_timeout:g}s (a member that hangs?); watch another"))
                return None
            raise
        finally:
            watchdog.cancel()
            call.cancel()
        return None  # etcd ended the stream: the feed ends as a WatchFeed's would

    def _give_up(self, call: Any, confirmed: threading.Event) -> None:
        """The watchdog of one pass: cancel it when etcd has not confirmed its watch by now."""
        with self._lock:
            if not confirmed.is_set() and call is self._call:
                self._unconfirmed = True
                call.cancel()

    def close(self) -> None:
        """Cancel the pass under way, stop the passes and close the channel."""
        with self._lock:
            if not self._closing():
                return
            call = self._call
        self._hurried.set()
        if call is not None:
            call.cancel()
        self._channel.close()


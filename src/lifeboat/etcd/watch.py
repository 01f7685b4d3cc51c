"""A cancellable stream of changes from one etcd watcher."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from lifeboat.errors import LifeboatError, OperationFailed
from lifeboat.etcd.channels import Stubs
from lifeboat.etcd.decode import watch_event
from lifeboat.etcd.failures import RevisionCompacted, translate
from lifeboat.etcdapi.model import WatchEvent
from lifeboat.etcdapi.proto import rpc_pb2

_END = object()


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

"""The few store calls capture's watch loop makes itself, each waited for a bounded time.

Segments go up on the upload thread, but the loop still asks the store two things: whether
another writer's segment already follows the chain (after a pause), and whether the chain's
record is still there (once a heartbeat interval). An object store that stops answering
(SIGSTOPped, behind a network that drops packets) holds an S3 request for minutes before its
client gives up; waited for in the loop, that stops capture reading etcd, so nothing is spooled
and etcd may compact past the chain. So each call runs on a thread of its own and the loop
waits at most a few seconds for it; one that has not answered is the repository unavailable,
and until it answers, the next call is too (at most one call hangs, whatever the store does).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from lifeboat.errors import RepositoryUnavailable
from lifeboat.waits import event_wait

T = TypeVar("T")


class _Call(Generic[T]):
    def __init__(self, call: Callable[[], T]) -> None:
        self.call = call
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.call()
        except BaseException as exc:  # handed to the caller, in its thread
            self.error = exc
        finally:
            self.done.set()


class StoreLook:
    """Runs store calls for one loop, one at a time, each waited for at most ``seconds``."""

    def __init__(self) -> None:
        self._pending: _Call[Any] | None = None  # a call that did not answer in time

    def __call__(self, what: str, call: Callable[[], T], seconds: float) -> T:
        """``call()``'s result or error; RepositoryUnavailable when it takes longer than
        ``seconds`` (it goes on, unwaited) or an earlier one is still waiting for the store."""
        if self._pending is not None and not self._pending.done.is_set():
            raise RepositoryUnavailable(f"the repository did not answer an earlier request yet; {what} not sent")
        looking = _Call(call)
        threading.Thread(target=looking.run, name="capture-store-look", daemon=True).start()
        if not event_wait(looking.done, seconds):
            self._pending = looking
            raise RepositoryUnavailable(f"the repository did not answer {what} within {seconds:g}s")
        self._pending = None
        if looking.error is not None:
            raise looking.error
        return looking.value  # type: ignore[return-value]

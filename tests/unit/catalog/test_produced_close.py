"""A background-produced stream closed on its own producer thread (as garbage collection may do)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from lifeboat.catalog.streams import Pipe, produced


def test_closing_a_produced_stream_on_its_own_worker_thread_does_not_try_to_join_it() -> None:
    # CI (test_backup_faults, corrupted snapshot): a stream of streams was collected on the
    # producer's thread, and closing it there raised "cannot join current thread" (ignored
    # by the collector, so the close never finished).
    taken, closed = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    streams: list[Iterator[int]] = []

    def produce(pipe: Pipe[int]) -> None:
        pipe.put(1)
        taken.wait(5)
        try:
            streams[0].close()  # what a garbage collection running on this thread may do
        except BaseException as exc:
            errors.append(exc)
        closed.set()

    stream = produced(produce, "closed-on-its-own-thread")
    streams.append(stream)
    assert next(stream) == 1
    taken.set()
    assert closed.wait(5)
    assert errors == []

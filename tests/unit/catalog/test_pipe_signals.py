"""The main thread waiting on a pipe still runs its signal handlers (SIGTERM unwinds a backup)."""

from __future__ import annotations

import threading
import time

import pytest

from lifeboat.catalog.streams import Pipe
from tests.support.signals import Stop, signal_to_another_thread


def test_a_signal_another_thread_took_reaches_the_main_thread_waiting_on_a_pipe() -> None:
    # The kernel may hand a process's SIGTERM to any thread. A main thread in an untimed wait
    # for the next chunk was not woken: a backup whose etcd stalled ignored SIGTERM until etcd
    # came back (CI: "exited 30.0 s after the signal").
    pipe: Pipe[bytes] = Pipe()
    # Only if the handler never runs: the chunk ends the wait, so the test fails instead of hanging.
    late_chunk = threading.Timer(5, lambda: (pipe.put(b"late"), pipe.close()))
    late_chunk.start()
    try:
        with signal_to_another_thread():
            started = time.monotonic()
            with pytest.raises(Stop):
                list(pipe)
            assert time.monotonic() - started < 2
    finally:
        late_chunk.cancel()

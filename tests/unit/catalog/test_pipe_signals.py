"""The main thread waiting on a pipe still runs its signal handlers (SIGTERM unwinds a backup)."""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

import pytest

from lifeboat.catalog.streams import Pipe


class Stop(Exception):
    pass


def test_a_signal_another_thread_took_reaches_the_main_thread_waiting_on_a_pipe() -> None:
    # The kernel may hand a process's SIGTERM to any thread. A main thread in an untimed wait
    # for the next chunk was not woken: a backup whose etcd stalled ignored SIGTERM until etcd
    # came back (CI: "exited 30.0 s after the signal").
    assert threading.current_thread() is threading.main_thread()
    pipe: Pipe[bytes] = Pipe()
    bystander = threading.Event()

    def wait() -> None:
        bystander.wait(10)

    def raise_stop(signum: int, frame: FrameType | None) -> None:
        raise Stop()

    other = threading.Thread(target=wait, daemon=True)
    other.start()
    # Only if the handler never runs: the chunk ends the wait, so the test fails instead of hanging.
    late_chunk = threading.Timer(5, lambda: (pipe.put(b"late"), pipe.close()))
    late_chunk.start()
    previous = signal.signal(signal.SIGUSR1, raise_stop)
    try:
        threading.Timer(0.2, lambda: signal.pthread_kill(other.ident or 0, signal.SIGUSR1)).start()
        started = time.monotonic()
        with pytest.raises(Stop):
            list(pipe)
        assert time.monotonic() - started < 2
    finally:
        signal.signal(signal.SIGUSR1, previous)
        late_chunk.cancel()
        bystander.set()

"""Deliver a signal to a thread other than the main one, as the kernel may do with SIGTERM."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


class Stop(Exception):
    """What the test's handler raises in the main thread."""


def raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop()


@contextmanager
def signal_to_another_thread(handler: Callable[[int, FrameType | None], None] = raise_stop,
                             after: float = 0.2) -> Iterator[None]:
    """While the block runs in the main thread, SIGUSR1 (handled by ``handler``) is sent to a
    bystander thread after ``after`` seconds: only a main thread whose wait ends now and then
    runs the handler soon."""
    assert threading.current_thread() is threading.main_thread()
    bystander = threading.Event()
    other = threading.Thread(target=lambda: bystander.wait(30), daemon=True)
    other.start()
    previous = signal.signal(signal.SIGUSR1, handler)
    sender = threading.Timer(after, lambda: signal.pthread_kill(other.ident or 0, signal.SIGUSR1))
    try:
        sender.start()
        yield
    finally:
        sender.join()
        signal.signal(signal.SIGUSR1, previous)
        bystander.set()

"""The clock seam: wall time, monotonic time, sleeping and waiting for a condition.

Everything that waits or reads the time (the agent and its election, capture, restore steps,
supervisors, member replacement, the etcd double's leases and watch arrivals) takes a :class:`Clock`. :class:`SystemClock` is the
real one; :class:`FakeClock` is the double for tests: time moves only when a test (or a
wait) moves it, and its wall clock can jump on its own, as an NTP step does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Protocol, TypeVar

from lifeboat.waits import event_wait

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall time, timezone-aware UTC; may jump."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass."""
        ...

    def wait(self, seconds: float, wake: threading.Event) -> bool:
        """Wait up to ``seconds`` or until ``wake`` is set; True when woken."""
        ...

    def wait_until(self, condition: Callable[[], bool], timeout: float, interval: float) -> bool:
        """Check ``condition`` every ``interval`` seconds until it holds (True) or ``timeout`` passed (False).

        The condition is checked at least once, and once more at the deadline.
        """
        ...


def wait_for(clock: Clock, check: Callable[[], T | None], timeout: float, interval: float) -> T | None:
    """The first value ``check`` returns other than None, polling as :meth:`Clock.wait_until` does; None on timeout."""
    found: list[T] = []

    def ready() -> bool:
        value = check()
        if value is not None:
            found.append(value)
        return bool(found)

    clock.wait_until(ready, timeout, interval)
    return found[0] if found else None


def _wait_until(clock: Clock, condition: Callable[[], bool], timeout: float, interval: float) -> bool:
    deadline = clock.monotonic() + timeout
    while True:
        if condition():
            return True
        left = deadline - clock.monotonic()
        if left <= 0:
            return False
        clock.sleep(min(interval, left))


class SystemClock:
    """The machine's clocks; sleeping really sleeps."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(seconds, 0.0))

    def wait(self, seconds: float, wake: threading.Event) -> bool:
        # In slices: the agent's and capture's SIGTERM handler only sets ``wake`` (lifeboat.waits).
        return event_wait(wake, max(seconds, 0.0))

    def wait_until(self, condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
        return _wait_until(self, condition, timeout, interval)


class FakeClock:
    """A clock that only moves when told; ``sleep`` and ``wait`` advance it instead of sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start")
        self._wall = start.astimezone(timezone.utc)
        self._mono = 1000.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on both clocks."""
        with self._lock:
            self._wall += timedelta(seconds=seconds)
            self._mono += seconds

    def jump_wall(self, seconds: float) -> None:
        """Move only the wall clock (an NTP step or a manual change), by ``seconds``."""
        with self._lock:
            self._wall += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.0))

    def wait(self, seconds: float, wake: threading.Event) -> bool:
        if wake.is_set():
            return True
        self.advance(max(seconds, 0.0))
        return wake.is_set()

    def wait_until(self, condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
        return _wait_until(self, condition, timeout, interval)

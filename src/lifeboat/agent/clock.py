"""The agent's clock seam: wall time for schedules, monotonic time for intervals, waiting.

:class:`SystemClock` is the real one. :class:`FakeClock` is the double for tests: time
moves only when a test (or a wait) moves it, and the wall clock can jump on its own.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall time, timezone-aware UTC; may jump."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps."""
        ...

    def wait(self, seconds: float, wake: threading.Event) -> bool:
        """Wait up to ``seconds`` or until ``wake`` is set; True when woken."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, seconds: float, wake: threading.Event) -> bool:
        return wake.wait(max(seconds, 0.0))


class FakeClock:
    """A clock that only moves when told; ``wait`` advances it instead of sleeping."""

    def __init__(self, start: datetime) -> None:
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

    def wait(self, seconds: float, wake: threading.Event) -> bool:
        if wake.is_set():
            return True
        self.advance(max(seconds, 0.0))
        return wake.is_set()

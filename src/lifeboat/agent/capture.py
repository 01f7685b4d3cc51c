"""Capture inside the agent: it runs while this agent leads, and stops (committing) when not.

A new leader resumes after the last committed segment (see :mod:`lifeboat.capture.resume`),
so a handover leaves no gap as long as etcd still holds the revisions after it. Should two
agents both believe they lead for a moment, both write the same history: a segment is
written create-only, and overlapping segments hold identical events.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from lifeboat.capture import CaptureStatus
from lifeboat.errors import LifeboatError

log = logging.getLogger("lifeboat.agent")

CaptureRun = Callable[[threading.Event, CaptureStatus], None]


class CaptureSupervisor:
    """Starts capture in its own thread while leading; stops and joins it otherwise."""

    def __init__(self, run: CaptureRun, join_timeout: float = 60.0) -> None:
        self._run = run
        self._join_timeout = join_timeout
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.status = CaptureStatus()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def lead(self, leading: bool) -> None:
        """Called every cycle with this agent's leadership."""
        if leading and not self.running:
            self._start()
        elif not leading and self.running:
            log.warning("capture stops: this agent no longer leads", extra={"event": "capture_stopped"})
            self.stop()

    def _start(self) -> None:
        self._stop = threading.Event()
        stop, status = self._stop, self.status

        def run() -> None:
            try:
                self._run(stop, status)
            except LifeboatError as exc:  # etcd or the store away, the spool another process's: said in one line
                log.error("capture failed: %s; the next cycle starts it again", exc, extra={"event": "capture_failed"})
            except Exception:  # a bug: the traceback too; the next cycle starts it again
                log.exception("capture failed", extra={"event": "capture_failed"})

        self._thread = threading.Thread(target=run, name="lifeboat-capture", daemon=True)
        self._thread.start()
        log.info("capture started", extra={"event": "capture_started"})

    def stop(self) -> None:
        """Stop capture; it commits what it received before the thread ends."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._join_timeout)
            self._thread = None

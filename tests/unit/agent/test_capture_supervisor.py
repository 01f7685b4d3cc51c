"""Capture in the agent runs only while leading, and stops (its run returns) when not."""

from __future__ import annotations

import logging
import threading

import pytest

from lifeboat.agent.capture import CaptureSupervisor
from lifeboat.agent.metrics import AgentMetrics
from lifeboat.capture import CaptureStatus
from lifeboat.clock import FakeClock
from tests.unit.catalog.capture_records import at


def test_capture_runs_while_leading_and_returns_when_leadership_goes() -> None:
    started = threading.Event()
    runs: list[CaptureStatus] = []

    def run(stop: threading.Event, status: CaptureStatus) -> None:
        runs.append(status)
        started.set()
        stop.wait()

    supervisor = CaptureSupervisor(run)
    supervisor.lead(False)
    assert not supervisor.running and runs == []
    supervisor.lead(True)
    assert started.wait(5) and supervisor.running
    supervisor.lead(True)
    assert len(runs) == 1, "a running capture is not started twice"
    supervisor.lead(False)
    assert not supervisor.running


def test_a_capture_that_failed_is_started_again_on_the_next_cycle() -> None:
    calls: list[int] = []

    def run(stop: threading.Event, status: CaptureStatus) -> None:
        calls.append(1)
        raise RuntimeError("boom")

    supervisor = CaptureSupervisor(run)
    supervisor.lead(True)
    supervisor.stop()
    supervisor.lead(True)
    supervisor.stop()
    assert len(calls) == 2


def test_metrics_show_capture_lag_revision_segments_and_gaps() -> None:
    metrics = AgentMetrics("prod", "a", "0", FakeClock(at(10)))
    status = CaptureStatus(last_revision=42, last_seen=at(8), oldest_pending=at(7), segments=3, gaps=1)
    metrics.capture(status, lambda: True)
    text = metrics.render()
    assert "lifeboat_capture_lag_seconds 3.0" in text
    assert "lifeboat_capture_last_revision 42" in text
    assert "lifeboat_capture_segments_total 3" in text and "lifeboat_capture_gaps_total 1" in text
    assert "lifeboat_capture_running 1" in text
    assert "lifeboat_capture_fenced 0" in text
    status.fenced = "another capture of cluster prod is running: lifeboat capture on host-a (pid 7) ..."
    assert "lifeboat_capture_fenced 1" in metrics.render()


def test_capture_running_is_0_on_a_capturing_agent_before_it_leads_and_absent_without_capture() -> None:
    """The ``LifeboatCaptureStopped`` alert sums the gauge per cluster: present as 0 wherever
    capture is enabled (from the first scrape, before any cycle), absent where it is not."""
    enabled = AgentMetrics("prod", "a", "0", FakeClock(at(10)))
    supervisor = CaptureSupervisor(lambda stop, status: None)
    enabled.capture(supervisor.status, lambda: supervisor.running)
    assert "lifeboat_capture_running 0.0" in enabled.render()
    assert "lifeboat_capture_running" not in AgentMetrics("prod", "b", "0", FakeClock(at(10))).render()


def test_a_capture_that_failed_for_a_known_reason_is_logged_in_one_line_without_a_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    """A spool another process holds fails every cycle's capture: one line each, not a traceback."""
    from lifeboat.capture.spool import SpoolInUse

    ended = threading.Event()

    def run(stop: threading.Event, status: CaptureStatus) -> None:
        ended.set()
        raise SpoolInUse("the capture spool /x is in use by another process (pid 7)")

    supervisor = CaptureSupervisor(run)
    with caplog.at_level(logging.ERROR, logger="lifeboat"):
        supervisor.lead(True)
        assert ended.wait(5)
        supervisor.stop()
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "capture_failed"]
    assert "in use by another process (pid 7)" in record.getMessage() and record.exc_info is None

"""A drill report passes only on checks that ran."""

from __future__ import annotations

import pytest

from lifeboat.clock import FakeClock
from lifeboat.verify.backup import VerifyReport
from lifeboat.verify.drill import DrillReport, Phase


def test_drill_without_checks_is_not_a_pass() -> None:
    verified = VerifyReport("b")
    verified.add("snapshot", True, "ok")
    report = DrillReport("b", verified)
    assert not report.ok
    report.add("revision", True, "5")
    assert report.ok


def test_a_phase_is_timed_on_the_drill_clock_also_when_it_fails() -> None:
    clock = FakeClock()
    report = DrillReport("b", VerifyReport("b"))
    with report.timed("restore", clock):
        clock.advance(2.5)
    with pytest.raises(RuntimeError), report.timed("start etcd", clock):
        clock.advance(0.25)
        raise RuntimeError("etcd exited")
    assert report.phases == [Phase("restore", 2.5), Phase("start etcd", 0.25)]
    assert report.seconds == 2.75

"""A drill report passes only on checks that ran."""

from __future__ import annotations

from lifeboat.verify.backup import VerifyReport
from lifeboat.verify.drill import DrillReport


def test_drill_without_checks_is_not_a_pass() -> None:
    verified = VerifyReport("b")
    verified.add("snapshot", True, "ok")
    report = DrillReport("b", verified)
    assert not report.ok
    report.add("revision", True, "5")
    assert report.ok

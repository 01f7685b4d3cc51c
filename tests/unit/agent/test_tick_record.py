"""Tick records in etcd: one strict schema; an off-schema record counts as absent, never half-read."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from lifeboat.agent.election import TickRecord

T = datetime(2024, 3, 1, 10, 0, tzinfo=timezone.utc)


def test_a_record_round_trips_through_its_json() -> None:
    record = TickRecord(T, T, "node-0", {"backup_id": "b", "duration": 2.5, "size": 10, "revision": 7})
    assert TickRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize("change", [
    {"outcome": {"duration": "2.5"}},
    {"outcome": {"size": 1.5}},
    {"outcome": {"surprise": 1}},
    {"tick": "yesterday"},
    {"tick": "2024-03-01T10:00:00"},  # no zone
    {"agent": 3},
    {"extra": True},
])
def test_an_off_schema_record_is_treated_as_absent(change: dict[str, object]) -> None:
    raw = json.loads(TickRecord(T, T, "node-0", {"passed": True}).to_json())
    assert TickRecord.from_json(json.dumps({**raw, **change}).encode()) is None

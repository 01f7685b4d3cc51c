"""The leadership check before each capture write: cheap while the lease surely holds, a
round trip to etcd once it may not (the agent was paused)."""

from __future__ import annotations

import logging

import pytest

from lifeboat.agent.election import Election
from lifeboat.clock import FakeClock
from lifeboat.etcd.memory import MemoryEtcd
from lifeboat.etcd.txn import Put

TTL = 6


def test_a_leader_writes_without_a_round_trip_while_its_lease_surely_holds() -> None:
    clock = FakeClock()
    etcd = MemoryEtcd(clock)
    election = Election(etcd, "prod", "a", TTL, "h", clock)
    assert election.refresh()
    asked = sum(etcd.calls.values())
    clock.advance(TTL / 2)
    assert election.still_leads()
    assert sum(etcd.calls.values()) == asked, "no call to etcd while the lease outlives the write"


def test_a_leader_paused_past_its_lease_finds_out_before_it_writes() -> None:
    clock = FakeClock()
    etcd = MemoryEtcd(clock)
    paused = Election(etcd, "prod", "a", TTL, "h", clock)
    other = Election(etcd, "prod", "b", TTL, "h", clock)
    assert paused.refresh() and not other.refresh()
    clock.advance(TTL + 1)  # paused: its lease expired and the other agent took over
    assert other.refresh()
    assert not paused.still_leads()
    assert not paused.leading


def test_a_late_renewal_is_made_before_the_write_when_the_lease_may_be_running_out() -> None:
    clock = FakeClock()
    etcd = MemoryEtcd(clock)
    election = Election(etcd, "prod", "a", TTL, "h", clock)
    assert election.refresh()
    clock.advance(TTL * 0.8)  # the agent loop is late, the lease still lives
    renewals = etcd.calls["lease_keepalive_once"]
    assert election.still_leads()
    assert etcd.calls["lease_keepalive_once"] == renewals + 1
    assert election.lease_until == clock.monotonic() + TTL


@pytest.mark.parametrize("foreign", [b"user=admin password=hunter2", b"node-b\nlifeboat: forged line"])
def test_a_leader_key_taken_by_a_value_that_is_no_plain_name_is_not_logged(
        foreign: bytes, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    etcd = MemoryEtcd(clock)
    election = Election(etcd, "prod", "a", TTL, "h", clock)
    assert election.refresh()
    etcd.txn([], [Put(election.leader_key, foreign)])  # written by something that is no lifeboat agent
    with caplog.at_level(logging.INFO, logger="lifeboat.agent"):
        assert not election.refresh()
    lost = [r.getMessage() for r in caplog.records if r.getMessage().startswith("lost leadership")]
    assert lost == [f"lost leadership: leader key now held by a holder whose id is not a plain name "
                    f"({len(foreign)} bytes, not shown)"]


def test_a_leader_key_taken_by_another_agent_names_it(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    etcd = MemoryEtcd(clock)
    election = Election(etcd, "prod", "a", TTL, "h", clock)
    assert election.refresh()
    etcd.txn([], [Put(election.leader_key, b"node-b.example.com")])
    with caplog.at_level(logging.INFO, logger="lifeboat.agent"):
        assert not election.refresh()
    assert "lost leadership: leader key now held by node-b.example.com" in caplog.text

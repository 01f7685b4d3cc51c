"""The agent's lease and capture's lock renewed through a member that hangs (SIGSTOP, a stalled
disk, a network that drops packets): the next member must answer before the lease ends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeboat.agent.election import Election
from lifeboat.capture.lock import CaptureLock
from lifeboat.clock import SystemClock
from lifeboat.etcd import ConnectionSettings, EtcdClient
from tests.support.binaries import EtcdRelease
from tests.support.etcd import EtcdCluster, EtcdMember

pytestmark = pytest.mark.integration

TTL = 6  # shorter than --command-timeout (10 s), as in the soak that found it (lease-ttl: 6s)


@pytest.fixture
def etcd(release35: EtcdRelease, tmp_path: Path) -> Iterator[EtcdCluster]:
    with EtcdCluster(release35, tmp_path / "etcd", size=3) as cluster:
        yield cluster


def a_follower(cluster: EtcdCluster) -> EtcdMember:
    """A member that is not raft's leader: pausing the leader would elect another, and a new
    leader gives every lease a full TTL again, which would hide what the test looks at."""
    with EtcdClient(ConnectionSettings.from_flags(",".join(cluster.endpoints))) as client:
        for member in cluster.members:
            status = client.status(member.client_url)
            if status.leader_id != status.member_id:
                return member
    raise AssertionError("no follower")


def test_a_leader_keeps_its_lease_and_capture_lock_while_the_member_it_renews_through_hangs(
        etcd: EtcdCluster) -> None:
    # Soak: one etcd member SIGSTOPped; the leading agent's renewal waited the whole
    # --command-timeout (10 s) on it before trying the next member, its 6 s lease had ended by
    # then: leader_lost, the capture lock lost, a new lease and a new lead a moment later.
    hung = a_follower(etcd)
    others = [m.client_url for m in etcd.members if m is not hung]
    settings = ConnectionSettings((hung.client_url, *others), command_timeout=10.0)  # the hung one is asked first
    with EtcdClient(settings) as client:
        election = Election(client, "hung", "agent-a", TTL, "hash", SystemClock())
        changes: list[bool] = []
        election.on_change = changes.append
        lock = CaptureLock(client, "hung", "agent-a", TTL, SystemClock(), keepalive=False)
        assert election.refresh()
        lock.acquire()
        lease, lock_lease = election.lease, lock.lease
        hung.pause()
        try:
            started = time.monotonic()
            assert election.refresh()
            assert lock.renew()
            took = time.monotonic() - started
        finally:
            hung.resume()
    assert changes == [True], "the lead was lost and taken again"
    assert (election.lease, lock.lease) == (lease, lock_lease), "a lease expired and was granted again"
    assert took < TTL

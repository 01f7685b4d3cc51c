"""Capture inside `lifeboat agent`: only the leader captures; a new leader resumes with no gap; the leader packs."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from lifeboat.agent.runtime import run_agent
from lifeboat.capture.lock import CaptureLock
from lifeboat.catalog.chains import ChainStore, SegmentRef
from lifeboat.config import LifeboatConfig
from lifeboat.clock import SystemClock
from lifeboat.etcd import ConnectionSettings, EtcdClient
from lifeboat.pitr import PointTarget, build_point_snapshot, find_point
from tests.integration.test_agent import (
    TTL, AgentProcess, SteppedWallClock, config_data, leader, manifests, wait_for,
)
from tests.integration.test_capture import captured_events, etcd_events, open_repo
from tests.integration.test_point_in_time import restored_state, source_state
from tests.support.binaries import EtcdRelease
from tests.support.capture_workload import write_history
from tests.support.cli import Cli
from tests.support.etcd import EtcdCluster

pytestmark = pytest.mark.integration


@pytest.fixture
def etcd(release35: EtcdRelease, tmp_path: Path) -> Iterator[EtcdCluster]:
    with EtcdCluster(release35, tmp_path / "etcd") as cluster:
        yield cluster


def capturing_agents(etcd: EtcdCluster, s3_repo: str, cluster: str, tmp_path: Path,
                     flush_interval: str) -> list[AgentProcess]:
    """Two agents of one cluster with capture enabled; the caller stops them."""
    agents = []
    for i in range(2):
        data = config_data(etcd, s3_repo, cluster)
        data["capture"] = {"enabled": True, "flush-interval": flush_interval, "spool-dir": str(tmp_path / f"spool-{i}")}
        path = tmp_path / f"node-{i}.yaml"
        path.write_text(yaml.safe_dump(data))
        agents.append(AgentProcess(f"node-{i}", path))
    return agents


@dataclass
class Handover:
    """Two capturing agents of one cluster, the leader first, and a writer thread putting to 50 keys."""

    first: AgentProcess
    other: AgentProcess
    written: list[int]
    _stop: threading.Event
    _writer: threading.Thread

    def stop_writing(self) -> int:
        """Stop the writer; the last revision it wrote."""
        self._stop.set()
        self._writer.join(10)
        return self.written[-1]


def captured(agent: AgentProcess) -> float:
    """The last revision ``agent`` reports captured (0 before any)."""
    return agent.scrape().get("lifeboat_capture_last_revision{}", 0)


@contextmanager
def handover(etcd: EtcdCluster, s3_repo: str, cluster: str, tmp_path: Path, flush_interval: str,
             pause: float) -> Iterator[Handover]:
    """Yields once a leader is known and the writer runs; stops the writer and every agent (a
    stopped one resumed first) on the way out."""
    stop = threading.Event()
    written: list[int] = []

    def write() -> None:
        with EtcdClient(ConnectionSettings((etcd.endpoints[0],))) as c:
            i = 0
            while not stop.is_set():
                written.append(c.put(f"/registry/{cluster}/{i % 50}", f"v{i}".encode()))
                i += 1
                time.sleep(pause)

    writer = threading.Thread(target=write, daemon=True)
    agents: list[AgentProcess] = []
    try:
        agents = capturing_agents(etcd, s3_repo, cluster, tmp_path, flush_interval)
        wait_for(lambda: leader(etcd, cluster) is not None, 60, "a leader")  # two processes starting
        first = next(a for a in agents if a.name == leader(etcd, cluster))
        other = next(a for a in agents if a is not first)
        writer.start()
        yield Handover(first, other, written, stop, writer)
    finally:
        stop.set()
        for a in agents:
            if a.proc.poll() is None:
                a.proc.send_signal(signal.SIGCONT)
            a.stop()


def test_only_the_leader_captures_and_a_new_leader_resumes_without_a_gap(
        etcd: EtcdCluster, s3_repo: str, tmp_path: Path, cli: Cli) -> None:
    cluster = "capture-handover"
    with handover(etcd, s3_repo, cluster, tmp_path, "200ms", pause=0.02) as h:
        wait_for(lambda: h.first.scrape().get("lifeboat_capture_segments_total{}", 0) >= 3, 60, "segments")
        assert h.first.scrape()["lifeboat_capture_running{}"] == 1
        # The follower may still be starting on a loaded machine: ask once it has finished a
        # cycle as a follower, in which a wrong start of capture would have happened.
        wait_for(lambda: h.other.scrape().get("lifeboat_agent_cycles_total{}", 0) >= 1, 60,
                 "the follower's first cycle")
        follower = h.other.scrape()
        assert follower["lifeboat_agent_is_leader{}"] == 0
        assert follower["lifeboat_capture_running{}"] == 0, "a follower must not capture"

        h.first.proc.send_signal(signal.SIGKILL)  # mid-segment: what it had not committed is lost
        wait_for(lambda: leader(etcd, cluster) == h.other.name, 3 * TTL + 5, "the new leader")
        after_kill = h.written[-1]
        wait_for(lambda: captured(h.other) >= after_kill, 60, "the new leader capturing past the handover")
        last = h.stop_writing()
        wait_for(lambda: captured(h.other) >= last, 30, "the last write")
        assert h.other.scrape()["lifeboat_capture_base_backups_total{}"] == 0, "the new leader must resume"

    repo = open_repo(s3_repo)
    chains = ChainStore(repo.store).chains(cluster)
    assert len(chains) == 1 and chains[0].gap is None
    timeline = cli.json("timeline", "--repo", s3_repo, "--cluster", cluster)
    base = chains[0].info.base_revision
    # Before capture's base only the scheduled backups exist; from the base on, nothing is missing.
    assert [g for g in timeline[0]["gaps"] if (g["before_revision"] or 1 << 62) > base] == []
    window = next(w for w in timeline[0]["windows"] if w["chain"])
    assert window["last_revision"] >= last
    with EtcdClient(ConnectionSettings((etcd.endpoints[0],))) as c:
        expected = etcd_events(c, chains[0].info.base_revision, window["last_revision"])
    stored = captured_events(repo, cluster)
    deduplicated = list(dict.fromkeys(stored))  # a revision the killed leader committed may be stored twice
    assert deduplicated == expected


def test_a_leader_paused_past_its_lease_writes_nothing_that_forks_the_chain(
        etcd: EtcdCluster, s3_repo: str, tmp_path: Path, cli: Cli) -> None:
    """A partitioned leader (SIGSTOP past its lease) comes back holding uncommitted events: the
    new leader has continued the chain meanwhile, so the old one must not commit them."""
    cluster = "capture-partition"
    # A long flush interval: the paused leader certainly holds an open segment.
    with handover(etcd, s3_repo, cluster, tmp_path, "1500ms", pause=0.01) as h:
        wait_for(lambda: h.first.scrape().get("lifeboat_capture_segments_total{}", 0) >= 2, 60, "segments")

        h.first.proc.send_signal(signal.SIGSTOP)  # partitioned: its lease runs out while it holds events
        wait_for(lambda: leader(etcd, cluster) == h.other.name, 3 * TTL + 10, "the new leader")
        after_pause = h.written[-1]
        wait_for(lambda: captured(h.other) >= after_pause, 60, "the new leader capturing past the pause")
        h.first.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: h.first.scrape().get("lifeboat_capture_running{}") == 0, 30,
                 "the old leader stopping its capture")
        time.sleep(3)  # room for a wrongly written segment to appear
        last = h.stop_writing()
        wait_for(lambda: captured(h.other) >= last, 30, "the last write")

    repo = open_repo(s3_repo)
    (chain,) = ChainStore(repo.store).chains(cluster)
    assert chain.gap is None
    ranges = [(s.first_revision, s.last_revision) for s in chain.segments]
    assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:])), f"the chain forks or overlaps: {ranges}"
    assert ranges[0][0] == chain.info.base_revision + 1 and ranges[-1][1] >= last
    timeline = cli.json("timeline", "--repo", s3_repo, "--cluster", cluster)
    assert [g for g in timeline[0]["gaps"] if (g["before_revision"] or 1 << 62) > chain.info.base_revision] == []
    with EtcdClient(ConnectionSettings((etcd.endpoints[0],))) as c:
        expected = etcd_events(c, chain.info.base_revision, ranges[-1][1])
    assert captured_events(repo, cluster) == expected, "every revision once, none missing"


def test_the_leader_waits_while_a_hand_run_capture_holds_the_lock_and_captures_once_it_is_free(
        etcd: EtcdCluster, s3_repo: str, tmp_path: Path) -> None:
    cluster = "capture-locked"
    holder = "lifeboat capture on another-host (pid 7)"
    data = config_data(etcd, s3_repo, cluster)
    data["capture"] = {"enabled": True, "flush-interval": "200ms", "spool-dir": str(tmp_path / "spool")}
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(data))
    with EtcdClient(ConnectionSettings((etcd.endpoints[0],))) as client:
        held = CaptureLock(client, cluster, holder, TTL, SystemClock())  # as 'lifeboat capture' takes it
        held.acquire()
        agent = AgentProcess("node-0", path)
        try:
            def notes() -> list[object]:
                return [line for line in list(agent.lines)
                        if f"another capture of cluster {cluster} is running: {holder}" in str(line.get("message"))]

            wait_for(lambda: leader(etcd, cluster) == "node-0", 60, "the agent leading")
            wait_for(notes, 60, "the agent's note that another capture holds the lock")
            time.sleep(3 * TTL)  # several retries of the leader's capture, and lock renewals of ours
            assert ChainStore(open_repo(s3_repo).store).chains(cluster) == [], "the agent wrote no chain"
            assert all(labels.get("lifeboat.capture") != "base" for labels in manifests(s3_repo, cluster))
            assert len(notes()) == 1, "noted once, not once per retry"
            assert agent.scrape()["lifeboat_capture_fenced{}"] == 1
            held.release()
            wait_for(lambda: bool(ChainStore(open_repo(s3_repo).store).chains(cluster)), 60,
                     "the agent's base backup and chain once the lock is free")
            written = client.put(f"/registry/{cluster}/after", b"captured")
            wait_for(lambda: captured(agent) >= written, 60, "the agent capturing a write")
            assert agent.scrape()["lifeboat_capture_fenced{}"] == 0
        finally:
            held.release()
            agent.stop()
    (chain,) = ChainStore(open_repo(s3_repo).store).chains(cluster)
    assert chain.gap is None and chain.segments


def packs_hold(refs: tuple[SegmentRef, ...]) -> set[str]:
    """The segments another one (a pack) holds: its revisions and more."""
    return {b.name for b in refs for a in refs
            if a is not b and a.first_revision <= b.first_revision and b.last_revision <= a.last_revision}


def test_the_leader_packs_its_small_segments_while_it_captures_and_every_point_restores_exactly(
        etcd: EtcdCluster, s3_repo: str, tmp_path: Path, cli: Cli) -> None:
    cluster = "capture-pack"
    # Ahead of the store's own clock, which dates the packs (deleted once that old, here at once).
    clock = SteppedWallClock((datetime.now(timezone.utc) + timedelta(minutes=1)).replace(second=20))
    config = LifeboatConfig.model_validate({**config_data(etcd, s3_repo, cluster), "capture": {
        "enabled": True, "flush-interval": "200ms", "spool-dir": str(tmp_path / "spool"),
        "pack-min-age": 0, "pack-delete-after": 0}})
    stop = threading.Event()
    codes: list[int] = []
    agent = threading.Thread(target=lambda: codes.append(
        run_agent(config, {**os.environ, "LIFEBOAT_AGENT_ID": "node-0"}, stop, clock)))
    repo = open_repo(s3_repo)
    chains = ChainStore(repo.store)
    revisions: list[int] = []

    def refs() -> tuple[SegmentRef, ...]:
        listings = chains.chains(cluster)
        return listings[0].segments if listings else ()

    def write(rounds: range) -> None:
        for round_ in rounds:
            revisions.extend(write_history(client, 1, tag=f"p{round_}").revisions)
            time.sleep(0.3)  # a segment or more each (flush-interval 200ms)
        wait_for(lambda: max((r.last_revision for r in refs()), default=0) >= revisions[-1], 30, "capture")

    with EtcdClient(ConnectionSettings((etcd.endpoints[0],))) as client:
        agent.start()
        try:
            wait_for(lambda: manifests(s3_repo, cluster) and chains.chains(cluster), 60, "a backup and a chain")
            write(range(4))
            clock.jump(60)  # the next tick: a backup, then a pass that packs
            wait_for(lambda: packs_hold(refs()), 60, "a pack")
            held = packs_hold(refs())
            write(range(4, 8))  # capture goes on beside the packs
            clock.jump(60)  # a pass that deletes what the first pack holds, and packs what came since
            wait_for(lambda: not held & {r.name for r in refs()}, 60, "the segments the first pack holds deleted")
            write(range(8, 10))
        finally:
            stop.set()
            agent.join(60)
        assert codes == [0]
        (listing,) = chains.chains(cluster)
        assert listing.gap is None and len(held) >= 3
        (timeline,) = cli.json("timeline", "--repo", s3_repo, "--cluster", cluster)
        assert [g for g in timeline["gaps"] if (g["before_revision"] or 1 << 62) > listing.info.base_revision] == []
        for revision in sorted({revisions[0], revisions[9], revisions[len(revisions) // 2], revisions[-1]}):
            point = find_point(repo, cluster, PointTarget(revision=revision), None)
            built = build_point_snapshot(repo, point, None, tmp_path / f"at-{revision}.db")
            assert restored_state(built.path) == source_state(client, revision), f"state differs at {revision}"

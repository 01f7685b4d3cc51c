"""`lifeboat agent`: three agents, one real etcd 3.5.1, one SeaweedFS; election, ticks, signals."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from lifeboat.agent.jobs import TICK_LABEL
from lifeboat.agent.runtime import run_agent
from lifeboat.catalog.repository import BackupRepository
from lifeboat.config import LifeboatConfig
from lifeboat.etcd import ConnectionSettings, EtcdClient
from lifeboat.store import open_store
from tests.support.binaries import EtcdRelease
from tests.support.etcd import EtcdCluster
from tests.support.etcd_load import load_keys

pytestmark = pytest.mark.integration

TTL = 2
# Slack for a process that is ready to run but waits for a CPU: CI runs the suite on two cores,
# and a loaded developer machine runs several agents and etcd members at once.
SCHEDULING_ALLOWANCE = 1.0


class SteppedWallClock:
    """Real monotonic time and waits; a wall clock the test moves to the next cron tick."""

    def __init__(self, start: datetime) -> None:
        self.offset = start - datetime.now(timezone.utc)

    def now(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, seconds: float, wake: threading.Event) -> bool:
        return wake.wait(seconds)

    def jump(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def etcd(release35: EtcdRelease, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with EtcdCluster(release35, tmp_path_factory.mktemp("agent-etcd")) as cluster:
        yield cluster


def config_data(etcd: EtcdCluster, repo: str, cluster: str, listen: str = "127.0.0.1:0") -> dict[str, object]:
    return {
        "cluster": cluster,
        "etcd": {"endpoints": ",".join(etcd.endpoints)},
        "repository": {"url": repo},
        "backup": {"capture-files": False},
        "schedules": {"backup": "* * * * *"},
        "agent": {"lease-ttl": TTL, "listen": listen},
    }


def manifests(repo: str, cluster: str) -> list[dict[str, str]]:
    store = BackupRepository.open(open_store(repo), create=True)
    return [dict(m.labels) for m in store.manifests(cluster)]


def backup_objects(repo: str, cluster: str) -> list[str]:
    return [o.key for o in open_store(repo).list(f"clusters/{cluster}/")]


def leader(etcd: EtcdCluster, cluster: str) -> str | None:
    with EtcdClient(ConnectionSettings.from_flags(",".join(etcd.endpoints))) as client:
        kv = client.get(f"/lifeboat/{cluster}/leader")
        return kv.value.decode() if kv else None


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_three_agents_make_exactly_one_backup_per_tick(etcd: EtcdCluster, s3_repo: str) -> None:
    cluster = "ticks"
    clock = SteppedWallClock(datetime(2024, 5, 1, 10, 0, 20, tzinfo=timezone.utc))
    config = LifeboatConfig.model_validate({**config_data(etcd, s3_repo, cluster), "retention": {"keep-last": 2}})
    stop = threading.Event()
    codes: dict[str, int] = {}

    def agent(name: str) -> None:
        codes[name] = run_agent(config, {**os.environ, "LIFEBOAT_AGENT_ID": name}, stop, clock)

    threads = [threading.Thread(target=agent, args=(f"node-{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(manifests(s3_repo, cluster)) == 1, 60, "the first backup")
        clock.jump(60)
        wait_for(lambda: len(manifests(s3_repo, cluster)) == 2, 60, "the second tick's backup")
        clock.jump(60)
        wait_for(lambda: [m[TICK_LABEL][11:16] for m in manifests(s3_repo, cluster)] == ["10:01", "10:02"], 60,
                 "the third tick's backup, and the first pruned (keep-last 2)")
        time.sleep(3 * TTL / 3 + 0.5)  # a few more cycles of every agent: no extra backup
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    labels = manifests(s3_repo, cluster)
    assert [m[TICK_LABEL] for m in labels] == ["2024-05-01T10:01:00+00:00", "2024-05-01T10:02:00+00:00"]
    assert len({m["lifeboat.agent"] for m in labels}) == 1
    assert codes == {"node-0": 0, "node-1": 0, "node-2": 0}
    assert leader(etcd, cluster) is None  # every agent resigned on stop


class AgentProcess:
    """``lifeboat agent`` as a process; its config listens on port 0 and :meth:`url` reads back the bound address."""

    def __init__(self, name: str, config: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self._url: str | None = None
        env = {**os.environ, **(env or {}), "LIFEBOAT_AGENT_ID": name}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lifeboat.cli.main", "agent", "--config", str(config), "--log-format", "json"],
            env=env, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[dict[str, object]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                self.lines.append({"message": line})

    def events(self) -> list[object]:
        return [line.get("event") for line in list(self.lines)]

    def event_time(self, event: str) -> float:
        """Unix time of the newest log line with ``event``, as the agent stamped it."""
        stamps = [line["time"] for line in list(self.lines) if line.get("event") == event]
        assert stamps, f"agent {self.name} logged no {event}: {self.lines}"
        return datetime.fromisoformat(str(stamps[-1])).timestamp()

    def wait_output(self) -> list[object]:
        """The events of an agent that exited, once its last log line has been read."""
        self._reader.join(10)
        return self.events()

    def url(self) -> str | None:
        """Where the agent serves HTTP, from its ``http_started`` line; None until it logged one."""
        if self._url is None:
            started = [line for line in list(self.lines) if line.get("event") == "http_started"]
            if started:
                self._url = str(started[0]["url"])
        return self._url

    def scrape(self) -> dict[str, float]:
        """The parsed samples; empty while the process is still starting to listen."""
        url = self.url()
        if url is None:
            assert self.proc.poll() is None, f"agent {self.name} exited: {self.lines}"
            return {}
        try:
            # The collector only copies numbers under a lock; what can take seconds is this
            # process and the agent's waiting for a CPU on a loaded machine.
            with urllib.request.urlopen(f"{url}/metrics", timeout=30) as r:
                text = r.read().decode()
        except urllib.error.URLError:
            assert self.proc.poll() is None, f"agent {self.name} exited: {self.lines}"
            return {}
        return {s.name + json.dumps(s.labels, sort_keys=True): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def test_killing_the_active_agent_hands_over_within_one_ttl(
    etcd: EtcdCluster, s3_repo: str, tmp_path: Path
) -> None:
    cluster = "handover"
    agents: list[AgentProcess] = []
    started = time.time()
    try:
        for i in range(3):
            path = tmp_path / f"node-{i}.yaml"
            data = config_data(etcd, s3_repo, cluster)
            # A schedule whose next tick is months away: the first backup runs at start (no tick
            # recorded yet) and no second tick can fall inside the test, whenever it runs.
            data["schedules"] = {"backup": "@yearly"}
            path.write_text(yaml.safe_dump(data))
            agents.append(AgentProcess(f"node-{i}", path))
        # With that schedule the backup never comes unless it runs at start: the wait bounds
        # only a failing run (three processes starting and a backup, on a loaded machine).
        wait_for(lambda: len(manifests(s3_repo, cluster)) == 1, 120, "the first backup")
        first = leader(etcd, cluster)
        active = next(a for a in agents if a.name == first)
        wait_for(lambda: active.scrape().get("lifeboat_backups_total{}") == 1, 30, "metrics of the backup")
        m = active.scrape()
        assert m["lifeboat_agent_is_leader{}"] == 1
        assert m["lifeboat_backup_last_revision{}"] > 0
        assert m["lifeboat_backup_last_size_bytes{}"] > 0
        # The backup finished after the agents started and before this scrape; its manifest
        # records the time in whole seconds (cut down), so the age may count up to the second
        # the agents started in.
        assert 0 <= m["lifeboat_backup_age_seconds{}"] <= time.time() - math.floor(started)
        followers = [a for a in agents if a is not active]
        wait_for(lambda: all("lifeboat_backup_age_seconds{}" in f.scrape() for f in followers), 60,
                 "followers learning the backup from etcd")
        assert all(f.scrape().get("lifeboat_agent_is_leader{}") == 0 for f in followers)

        killed = time.time()
        active.proc.send_signal(signal.SIGKILL)
        wait_for(lambda: leader(etcd, cluster) not in (None, first), 60, "a new leader")
        new = next(a for a in followers if a.name == leader(etcd, cluster))
        wait_for(lambda: "leader_acquired" in new.events(), 30, "the new leader's log line")
        # From the kill to the moment the new leader took the key, as its own log line stamps
        # it: not to when this test's next poll of etcd (a new client each time) saw it.
        handover = new.event_time("leader_acquired") - killed
        # The killed agent renewed its lease before it died, so etcd expires it within TTL, on
        # the next pass of its expiry check (every 500 ms: etcd's lessor runLoop); a follower
        # takes the key on its next cycle (every TTL / 3). It fails a lease that outlives the
        # configured TTL by more than that, and a handover that waits for anything else.
        assert handover <= TTL + 0.5 + TTL / 3 + SCHEDULING_ALLOWANCE, handover
        assert len(manifests(s3_repo, cluster)) == 1  # the tick already done is not redone

        follower = next(a for a in followers if a.name != leader(etcd, cluster))
        follower.proc.send_signal(signal.SIGTERM)
        assert follower.proc.wait(10) == 0
        assert "agent_stopped" in follower.events()
    finally:
        for a in agents:
            a.stop()


def stopped_by(agent: AgentProcess, sig: signal.Signals, *, once: str, within: float) -> None:
    """``sig`` sent to ``agent`` once it logged the event ``once``; it must exit 0 within 20 s."""
    try:
        wait_for(lambda: once in agent.events(), within, f"the agent to log {once}")
        agent.proc.send_signal(sig)
        assert agent.proc.wait(20) == 0
    finally:
        agent.stop()


def test_sigterm_mid_backup_leaves_no_manifest_and_exits_0(
    etcd: EtcdCluster, s3_repo: str, tmp_path: Path
) -> None:
    cluster = "sigterm"
    with EtcdClient(ConnectionSettings.from_flags(",".join(etcd.endpoints))) as client:
        if client.status(etcd.endpoints[0]).db_size < 48 << 20:
            load_keys(client, ((f"/bulk/{i:07d}".encode(), os.urandom(2048)) for i in range(24_000)))
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config_data(etcd, s3_repo, cluster)))
    agent = AgentProcess("solo", path)
    stopped_by(agent, signal.SIGTERM, once="backup_started", within=60)
    events = agent.wait_output()
    assert "backup_committed" not in events, events
    assert any(line.get("reason") == "abandoned" for line in agent.lines), agent.lines
    assert manifests(s3_repo, cluster) == []
    assert backup_objects(s3_repo, cluster) == []
    assert leader(etcd, cluster) is None


def test_sigterm_mid_drill_stops_the_drill_cleans_up_and_exits_at_once(
    etcd: EtcdCluster, release35: EtcdRelease, tmp_path: Path
) -> None:
    """SIGTERM during a scheduled drill waited for the whole drill (the throwaway etcd's start
    alone may take a minute or more) before the agent stopped."""
    cluster = "sigterm-drill"
    tools = tmp_path / "tools"
    tools.mkdir()
    assert release35.etcdutl is not None
    shutil.copy(release35.etcdutl, tools / "etcdutl")
    pid_file = tmp_path / "throwaway-etcd.pid"
    # An etcd that starts and never serves: the drill waits for it (by its db's size, a minute or more).
    fake = tools / "etcd"
    fake.write_text(f'#!/bin/sh\ncase "$1" in --version) exec {release35.etcd} --version;; esac\n'
                    f'echo $$ > {pid_file}\nexec sleep 600\n')
    fake.chmod(0o755)
    spool = tmp_path / "spool"
    spool.mkdir()
    data = config_data(etcd, (tmp_path / "repo").as_uri(), cluster)
    data["schedules"] = {"backup": "@yearly", "drill": "* * * * *"}
    data["backup"] = {"capture-files": False, "tmp-dir": str(spool)}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data))
    agent = AgentProcess("solo", path, {"PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"})
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 120, "the throwaway etcd to start")
        etcd_pid = int(pid_file.read_text())
        sent = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.proc.wait(30) == 0
        took = time.monotonic() - sent
    finally:
        agent.stop()
    events = agent.wait_output()
    assert "drill_started" in events and "drill_finished" not in events, events
    assert took < 5 + SCHEDULING_ALLOWANCE, took
    assert any(line.get("reason") == "abandoned" for line in agent.lines), agent.lines
    with pytest.raises(ProcessLookupError):
        os.kill(etcd_pid, 0)


def test_sigterm_while_etcd_froze_mid_snapshot_abandons_the_backup_at_once(
    etcd: EtcdCluster, tmp_path: Path
) -> None:
    """The stop flag was looked at between chunks only: with etcd frozen mid-stream the agent
    waited for gRPC's keepalive to give up (about 70 s), past the 30 s deploy/ grants it."""
    cluster = "frozen"
    with EtcdClient(ConnectionSettings.from_flags(",".join(etcd.endpoints))) as client:
        if client.status(etcd.endpoints[0]).db_size < 48 << 20:
            load_keys(client, ((f"/bulk/{i:07d}".encode(), os.urandom(2048)) for i in range(24_000)))
    spool = tmp_path / "spool"
    spool.mkdir()
    data = config_data(etcd, (tmp_path / "repo").as_uri(), cluster)
    data["backup"] = {"capture-files": False, "tmp-dir": str(spool)}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data))
    agent = AgentProcess("solo", path)
    try:
        wait_for(lambda: any(p.stat().st_size > 1 << 20 for p in spool.glob("lifeboat-*/snapshot.db")), 60,
                 "the backup to spool a MiB")
        for member in etcd.members:
            member.pause()
        try:
            time.sleep(3)  # what gRPC had buffered is read; the stream now waits on etcd
            signalled = time.monotonic()
            agent.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: "cycle_failed" in agent.events(), 60, "the backup to be abandoned")
            abandoned_after = time.monotonic() - signalled
        finally:
            for member in etcd.members:
                member.resume()
        assert agent.proc.wait(30) == 0
    finally:
        agent.stop()
    assert abandoned_after < 10, f"abandoned {abandoned_after:.1f} s after SIGTERM"
    assert any(line.get("reason") == "abandoned" for line in agent.lines), agent.lines
    assert manifests((tmp_path / "repo").as_uri(), cluster) == []
    assert list(spool.iterdir()) == []


def yearly_agent(etcd: EtcdCluster, tmp_path: Path, cluster: str, listen: str = "127.0.0.1:0") -> AgentProcess:
    """One agent backing up to a directory once, at start (its next tick is months away)."""
    path = tmp_path / "agent.yaml"
    data = config_data(etcd, (tmp_path / "repo").as_uri(), cluster, listen)
    data["schedules"] = {"backup": "@yearly"}
    path.write_text(yaml.safe_dump(data))
    return AgentProcess("solo", path)


def test_sighup_stops_the_agent_and_frees_the_lead_at_once(etcd: EtcdCluster, tmp_path: Path) -> None:
    cluster = "hangup"
    agent = yearly_agent(etcd, tmp_path, cluster)
    stopped_by(agent, signal.SIGHUP, once="backup_committed", within=120)
    assert "agent_stopped" in agent.wait_output()
    assert leader(etcd, cluster) is None  # revoked, not left to expire


def test_the_leader_metric_drops_when_the_agent_logs_that_etcd_froze(etcd: EtcdCluster, tmp_path: Path) -> None:
    agent = yearly_agent(etcd, tmp_path, "frozen")
    try:
        # Its backup at start done: frozen mid-snapshot, etcd would hold that stream instead.
        wait_for(lambda: "backup_committed" in agent.events(), 120, "the backup at start")
        assert agent.scrape().get("lifeboat_agent_is_leader{}") == 1
        etcd.first().pause()
        try:
            wait_for(lambda: "leader_lost" in agent.events(), 60, "the agent to log that it lost the lead")
            assert agent.scrape()["lifeboat_agent_is_leader{}"] == 0
        finally:
            etcd.first().resume()
    finally:
        agent.stop()


def test_a_repository_gone_from_under_a_backed_up_cluster_is_unavailable_not_recreated(
    etcd: EtcdCluster, tmp_path: Path
) -> None:
    cluster = "vanished"
    repo = tmp_path / "repo"  # never there: as a repository looks whose mount is missing
    earlier = datetime.now(timezone.utc) - timedelta(days=1)
    record = {"tick": earlier.isoformat(), "finished_at": earlier.isoformat(), "agent": "before",
              "outcome": {"backup_id": "b1", "duration": 1.0, "size": 1, "revision": 1}}
    with EtcdClient(ConnectionSettings.from_flags(",".join(etcd.endpoints))) as client:
        client.put(f"/lifeboat/{cluster}/ticks/backup", json.dumps(record).encode())
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config_data(etcd, repo.as_uri(), cluster)))
    agent = AgentProcess("solo", path)
    try:
        wait_for(lambda: {"backup_failed", "backup_committed"} & set(agent.events()), 120, "the backup's end")
    finally:
        agent.stop()
    assert "backup_committed" not in agent.events()
    failed = next(line for line in agent.lines if line.get("event") == "backup_failed")
    assert failed["reason"] == "repository_unavailable"
    assert f"no lifeboat repository at {repo.as_uri()}" in str(failed["message"])
    assert "may be missing" in str(failed["message"])
    assert not repo.exists()


def test_an_agent_listening_on_ipv6_serves_its_metrics(etcd: EtcdCluster, tmp_path: Path) -> None:
    agent = yearly_agent(etcd, tmp_path, "ipv6", listen="[::1]:0")
    try:
        wait_for(lambda: agent.scrape().get("lifeboat_agent_is_leader{}") == 1, 120, "the agent to lead")
        assert str(agent.url()).startswith("http://[::1]:")
    finally:
        agent.stop()

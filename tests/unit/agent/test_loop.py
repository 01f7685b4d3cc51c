"""The agent loop on a fake clock with an in-memory etcd: election, ticks, faults."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lifeboat.agent.election import Election
from lifeboat.agent.jobs import BackupOutcome, LeadershipLost
from lifeboat.agent.loop import Agent, AgentSettings, Backoff, Jobs, failure_reason
from lifeboat.agent.metrics import AgentMetrics
from lifeboat.capture.packing import PackResult
from lifeboat.clock import FakeClock
from lifeboat.config import load_config
from lifeboat.errors import DecryptionError, IntegrityError, RepositoryUnavailable, UsageError
from lifeboat.etcd.memory import MemoryEtcd
from lifeboat.verify.drill import DrillStopped

T0 = datetime(2024, 3, 1, 10, 0, 30, tzinfo=timezone.utc)
EVERY_MINUTE = "* * * * *"
TTL = 6


@dataclass
class Repo:
    """Backups 'committed' by any agent: (tick, agent)."""

    backups: list[tuple[datetime, str]] = field(default_factory=list)
    fail_with: Exception | None = None
    fail_times: int = 0


def backup_job(repo: Repo, name: str, clock: FakeClock) -> Callable[..., BackupOutcome]:
    def run(tick: datetime, may_commit: Callable[[], bool], stop: threading.Event) -> BackupOutcome:
        if repo.fail_times:
            repo.fail_times -= 1
            assert repo.fail_with is not None
            raise repo.fail_with
        if not may_commit():
            raise LeadershipLost("not leader")
        repo.backups.append((tick, name))
        return BackupOutcome(f"id-{len(repo.backups)}", clock.now(), 2.0, 100, 42)
    return run


@dataclass
class World:
    clock: FakeClock
    etcd: MemoryEtcd
    repo: Repo
    agents: dict[str, Agent]
    stop: dict[str, threading.Event]

    def cycle_all(self, names: list[str] | None = None) -> None:
        for name in names or list(self.agents):
            self.agents[name].cycle()

    def leaders(self) -> list[str]:
        return [n for n, a in self.agents.items() if a.election.leading]

    def run_for(self, seconds: float, names: list[str] | None = None, step: float = 2.0) -> None:
        end = self.clock.monotonic() + seconds
        while self.clock.monotonic() < end:
            self.cycle_all(names)
            self.clock.advance(step)


def make_world(count: int = 3, config: Callable[[str], str] = lambda n: "same",
               drill: Callable[[threading.Event], bool] | None = None, prune: Callable[[], int] | None = None,
               backup_cron: str = EVERY_MINUTE, start: datetime = T0,
               pack: Callable[[threading.Event], PackResult] | None = None) -> World:
    clock = FakeClock(start)
    etcd = MemoryEtcd(clock)
    repo = Repo()
    agents: dict[str, Agent] = {}
    stops: dict[str, threading.Event] = {}
    for i in range(count):
        name = f"node-{i}"
        settings = AgentSettings(cluster="prod", agent_id=name, backup_cron=backup_cron,
                                 drill_cron="*/5 * * * *" if drill else None, lease_ttl=TTL,
                                 interval=2.0, backoff_base=4.0, backoff_max=16.0)
        stops[name] = threading.Event()
        agents[name] = Agent(
            settings, Election(etcd, "prod", name, TTL, config(name), clock),
            Jobs(backup=backup_job(repo, name, clock), prune=prune, drill=drill, pack=pack),
            AgentMetrics("prod", name, "test", clock), clock, stops[name],
        )
    return World(clock, etcd, repo, agents, stops)


def test_three_agents_make_exactly_one_backup_per_tick() -> None:
    w = make_world()
    w.run_for(5 * 60)
    ticks = [t for t, _ in w.repo.backups]
    assert len(ticks) == len(set(ticks))
    assert ticks[0] == T0.replace(second=0)
    assert len(ticks) == 6  # 10:00 (at start) through 10:05
    assert {a for _, a in w.repo.backups} == {"node-0"}
    assert w.leaders() == ["node-0"]


def test_killed_leader_is_replaced_within_one_ttl_without_repeating_its_tick() -> None:
    w = make_world()
    w.run_for(10)
    assert w.leaders() == ["node-0"]
    w.clock.advance(1)
    died = w.clock.monotonic()
    # node-0 dies without resigning: it simply stops cycling.
    while w.leaders() != ["node-1"] and w.clock.monotonic() - died < 3 * TTL:
        w.cycle_all(["node-1", "node-2"])
        w.clock.advance(0.5)
        w.agents["node-0"].election.leading = False
    assert w.leaders() == ["node-1"]
    assert w.clock.monotonic() - died <= TTL + 0.5
    assert [t for t, _ in w.repo.backups] == [T0.replace(second=0)]
    w.run_for(60, ["node-1", "node-2"])
    assert [a for _, a in w.repo.backups] == ["node-0", "node-1"]


def test_stopped_agent_resigns_so_another_leads_at_once() -> None:
    w = make_world(2)
    w.cycle_all()
    w.stop["node-0"].set()
    assert w.agents["node-0"].run() == 0
    w.cycle_all(["node-1"])
    assert w.leaders() == ["node-1"]
    assert w.etcd.get("/lifeboat/prod/config/node-0") is None


def test_paused_leader_loses_leadership_and_cannot_commit() -> None:
    w = make_world(2)
    w.cycle_all()
    assert w.leaders() == ["node-0"]
    w.clock.advance(TTL + 1)  # node-0 was paused (SIGSTOP, a long GC) for more than a TTL
    w.cycle_all(["node-1"])
    assert w.agents["node-1"].election.leading
    assert w.agents["node-0"].election.confirm() is False
    w.agents["node-0"].cycle()
    assert w.leaders() == ["node-1"]


def test_forward_clock_jump_runs_one_backup_not_one_per_missed_tick() -> None:
    w = make_world(1)
    w.cycle_all()
    w.clock.jump_wall(3 * 3600)
    w.run_for(20)
    assert [t for t, _ in w.repo.backups] == [T0.replace(second=0), T0.replace(second=0) + timedelta(hours=3)]


def test_backward_clock_jump_does_not_repeat_a_tick() -> None:
    w = make_world(1)
    w.run_for(90)
    before = list(w.repo.backups)
    w.clock.jump_wall(-90)
    w.run_for(60)
    assert w.repo.backups[: len(before)] == before
    ticks = [t for t, _ in w.repo.backups]
    assert len(ticks) == len(set(ticks))
    assert len(w.repo.backups) == len(before)


def test_unreachable_repository_is_retried_with_backoff_and_the_loop_goes_on() -> None:
    w = make_world(1)
    w.repo.fail_with = RepositoryUnavailable("s3 down")
    w.repo.fail_times = 3
    attempts: list[float] = []
    agent = w.agents["node-0"]
    for _ in range(40):
        before = agent.backup_backoff.failures
        agent.cycle()
        if agent.backup_backoff.failures > before or (before and not agent.backup_backoff.failures):
            attempts.append(w.clock.monotonic())
        w.clock.advance(1)
    assert [b - a for a, b in zip(attempts, attempts[1:])] == [4, 8, 16]  # 3 failures, then success
    assert w.repo.backups[0][0] == T0.replace(second=0)  # the failed tick, taken late
    text = agent.metrics.render()
    assert 'lifeboat_backup_failures_total{reason="repository_unavailable"} 3' in text


def test_an_unexpected_error_fails_one_cycle_only(caplog: pytest.LogCaptureFixture) -> None:
    w = make_world(1)
    w.repo.fail_with = ZeroDivisionError("bug")
    w.repo.fail_times = 1
    agent = w.agents["node-0"]
    with caplog.at_level(logging.ERROR, "lifeboat.agent"):
        assert agent.cycle() is False
    assert "unexpectedly" in caplog.text
    w.clock.advance(1)
    assert agent.cycle() is True
    assert len(w.repo.backups) == 1


def test_etcd_outage_drops_leadership_and_fails_cycles_until_it_returns() -> None:
    w = make_world(1)
    agent = w.agents["node-0"]
    assert agent.cycle() is True
    w.etcd.stop(1)  # the only member: nothing answers
    assert agent.cycle() is False
    assert agent.election.leading is False
    assert 'reason="etcd_unavailable"' in agent.metrics.render()
    assert "lifeboat_agent_is_leader 0.0" in agent.metrics.render()
    w.etcd.start(1)
    assert agent.cycle() is True
    assert agent.election.leading is True


def test_the_leader_metric_drops_when_a_lease_lost_during_a_backup_is_logged() -> None:
    w = make_world(1)
    agent = w.agents["node-0"]
    seen: list[str] = []

    def paused_past_its_lease(tick: datetime, may_commit: Callable[[], bool], stop: threading.Event) -> BackupOutcome:
        w.clock.advance(TTL + 1)
        assert not may_commit()  # logs "lost leadership: our lease expired"
        seen.append(agent.metrics.render())
        raise LeadershipLost("not leader")

    agent.cycle()
    assert "lifeboat_agent_is_leader 1.0" in agent.metrics.render()
    w.clock.advance(60)
    agent.jobs = replace(agent.jobs, backup=paused_past_its_lease)
    assert agent.cycle() is False
    assert "lifeboat_agent_is_leader 0.0" in seen[0]


def test_different_configs_for_one_cluster_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    w = make_world(3, config=lambda n: "odd" if n == "node-2" else "same")
    with caplog.at_level(logging.WARNING, "lifeboat.agent"):
        for _ in range(3):
            w.cycle_all()
    assert "lifeboat_agent_config_conflicts 1" in w.agents["node-0"].metrics.render()
    assert "lifeboat_agent_config_conflicts 2" in w.agents["node-2"].metrics.render()
    # node-0 and node-1 each report node-2 once, not once per cycle.
    assert caplog.text.count("agents node-2 run with a different configuration") == 2


def test_followers_learn_the_last_backup_from_etcd_for_their_rpo_metric() -> None:
    w = make_world(2)
    w.cycle_all()
    w.clock.advance(5)
    w.cycle_all(["node-1"])
    assert "lifeboat_backup_age_seconds 5.0" in w.agents["node-1"].metrics.render()
    assert "lifeboat_backups_total 0" in w.agents["node-1"].metrics.render()


def test_prune_runs_after_each_backup_and_its_failure_does_not_undo_the_backup() -> None:
    calls: list[int] = []

    def prune() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RepositoryUnavailable("s3 down")
        return 2

    w = make_world(1, prune=prune)
    w.run_for(70)
    assert len(calls) == 2 and len(w.repo.backups) == 2
    text = w.agents["node-0"].metrics.render()
    assert 'reason="prune"} 1' in text and "lifeboat_pruned_backups_total 2" in text


def test_pack_runs_after_each_prune_and_its_failures_and_refusals_are_counted_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    order: list[str] = []
    outcomes = iter([RepositoryUnavailable("s3 down"), PackResult(packs=2, packed=40, deleted=7),
                     PackResult(refused=["segments held by x.seg.zst are kept: damaged"])])

    def prune() -> int:
        order.append("prune")
        return 0

    def pack(stop: threading.Event) -> PackResult:
        assert stop is w.stop["node-0"]  # a pass ends early when the agent stops
        order.append("pack")
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    w = make_world(1, prune=prune, pack=pack)
    with caplog.at_level(logging.INFO, logger="lifeboat.agent"):
        w.run_for(130)
    assert order == ["prune", "pack"] * 3 and len(w.repo.backups) == 3
    text = w.agents["node-0"].metrics.render()
    assert 'reason="pack"} 2' in text and "lifeboat_capture_packed_segments_total 40" in text
    assert "packed 40 capture segments into 2; deleted 7" in caplog.text
    assert "x.seg.zst are kept" in caplog.text and "s3 down" in caplog.text


def renewing() -> bool:
    return any(t.name == "lease-renewer" and t.is_alive() for t in threading.enumerate())


def test_every_job_of_the_leader_runs_with_its_lease_renewed_from_a_thread() -> None:
    seen: dict[str, bool] = {}

    def job(name: str, result: object) -> Callable[..., object]:
        def run(*_: object) -> object:
            seen[name] = renewing()
            return result
        return run

    w = make_world(1, prune=job("prune", 0), pack=job("pack", PackResult()), drill=job("drill", True))  # type: ignore[arg-type]
    agent = w.agents["node-0"]
    backup = agent.jobs.backup
    agent.jobs = replace(agent.jobs, backup=lambda *a: (seen.__setitem__("backup", renewing()), backup(*a))[1])
    w.run_for(6)
    assert seen == {"backup": True, "prune": True, "pack": True, "drill": True}
    assert not renewing()  # each renewer ends with its job


def test_a_prune_longer_than_the_lease_keeps_the_leadership() -> None:
    renewed = threading.Event()
    waits: list[bool] = []  # the loop logs and swallows what a job raises: assert after it

    def prune() -> int:
        for _ in range(2):  # 8 s of the fake clock in all, against a lease of TTL = 6 s
            w.clock.advance(TTL - 2)
            renewed.clear()
            waits.append(renewed.wait(10))
        return 0

    w = make_world(2, prune=prune)
    election = w.agents["node-0"].election
    renew = election.renew
    election.renew = lambda: (renew(), renewed.set())[0]  # type: ignore[method-assign]
    w.cycle_all()
    w.cycle_all(["node-1"])
    assert waits == [True, True], "the lease was not renewed during the prune"
    assert w.leaders() == ["node-0"] and election.confirm()


def test_drills_run_on_their_own_schedule_and_a_failed_drill_is_reported() -> None:
    results = iter([False, True])
    w = make_world(1, drill=lambda stop: next(results))
    w.run_for(6 * 60)
    text = w.agents["node-0"].metrics.render()
    assert 'lifeboat_drills_total{result="fail"} 1' in text
    assert 'lifeboat_drills_total{result="pass"} 1' in text
    assert "lifeboat_drill_last_result 1" in text


def test_a_drill_is_given_the_agents_stop_and_one_stopped_by_it_leaves_its_tick_undone() -> None:
    """SIGTERM during a drill waited for the whole drill: the drill had no way to learn of it."""
    given: list[threading.Event] = []

    def drill(stop: threading.Event) -> bool:
        given.append(stop)
        stop.set()  # SIGTERM arrives mid-drill
        raise DrillStopped("drill stopped before it finished: asked to stop")

    w = make_world(1, drill=drill)
    agent = w.agents["node-0"]
    w.cycle_all()
    assert given == [agent.stop]
    assert agent.election.last_tick("drill") is None
    text = agent.metrics.render()
    assert 'lifeboat_drills_total{result="fail"} 1' not in text and 'lifeboat_drills_total{result="pass"} 1' not in text
    assert agent.drill_backoff.ready(agent.clock.monotonic())


def test_interval_longer_than_a_third_of_the_ttl_is_refused() -> None:
    with pytest.raises(UsageError, match="third of the lease TTL"):
        AgentSettings(cluster="c", agent_id="a", backup_cron=EVERY_MINUTE, lease_ttl=6, interval=3).check()
    with pytest.raises(UsageError, match="cron"):
        AgentSettings(cluster="c", agent_id="a", backup_cron="hourly").check()


def test_backoff_doubles_up_to_its_cap() -> None:
    b = Backoff(10, 35)
    assert [b.failed(0) for _ in range(4)] == [10, 20, 35, 35]
    assert not b.ready(34) and b.ready(35)
    b.succeeded()
    assert b.ready(0) and b.failed(0) == 10


# Saturday 2022-12-31 23:59:30 UTC: every nickname's next tick is the midnight that follows.
NEW_YEAR = datetime(2023, 1, 1, tzinfo=timezone.utc)
ACCEPTED_SCHEDULES = [
    ("@yearly", datetime(2022, 1, 1, tzinfo=timezone.utc)),
    ("@annually", datetime(2022, 1, 1, tzinfo=timezone.utc)),
    ("@monthly", datetime(2022, 12, 1, tzinfo=timezone.utc)),
    ("@weekly", datetime(2022, 12, 25, tzinfo=timezone.utc)),
    ("@daily", datetime(2022, 12, 31, tzinfo=timezone.utc)),
    ("@midnight", datetime(2022, 12, 31, tzinfo=timezone.utc)),
    ("@hourly", datetime(2022, 12, 31, 23, tzinfo=timezone.utc)),
    ("0 0 * * *", datetime(2022, 12, 31, tzinfo=timezone.utc)),
    ("0  *  *  *  *", datetime(2022, 12, 31, 23, tzinfo=timezone.utc)),
]


@pytest.mark.parametrize(("cron", "previous_tick"), ACCEPTED_SCHEDULES)
def test_agent_runs_every_schedule_config_validate_accepts(
        tmp_path: Path, cron: str, previous_tick: datetime) -> None:
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"schedules:\n  backup: '{cron}'\n")
    accepted = load_config(config).schedules.backup
    assert accepted is not None
    w = make_world(count=1, backup_cron=accepted, start=NEW_YEAR - timedelta(seconds=30))
    w.run_for(90)
    assert [t for t, _ in w.repo.backups] == [previous_tick, NEW_YEAR]


@pytest.mark.parametrize("cron", ["@reboot", "@every 5m", "0 0 * * * *", "0 0 31 2 *", "0 0 * *"])
def test_agent_refuses_the_schedules_config_validate_refuses(tmp_path: Path, cron: str) -> None:
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"schedules:\n  backup: '{cron}'\n")
    with pytest.raises(UsageError, match="schedules.backup"):
        load_config(config)
    with pytest.raises(UsageError, match="agent backup schedule"):
        make_world(count=1, backup_cron=cron)


def test_an_identity_that_opens_nothing_is_counted_as_configuration_not_a_failed_backup() -> None:
    """A drill with the wrong identity file: the agent's config, as a missing one is."""
    assert failure_reason(DecryptionError("cannot decrypt it with the identity given")) == "config"
    assert failure_reason(UsageError("no identity")) == "config"
    assert failure_reason(IntegrityError("encrypted object is damaged")) == "integrity"


def test_renewals_that_cannot_reach_etcd_past_the_lease_end_lose_the_lead(caplog: pytest.LogCaptureFixture) -> None:
    """With etcd frozen during a long backup, each failed renewal was only a warning: the agent
    went on leading (metric 1) until the backup's stream gave up, long after etcd could have
    expired its lease and another agent taken the lead."""
    w = make_world(1)
    agent = w.agents["node-0"]
    assert agent.cycle() is True
    changes: list[bool] = []
    agent.election.on_change = changes.append
    agent.election.renewal_failed("no etcd endpoint answered")  # within the lease: still ours
    assert agent.election.leading and changes == []
    w.clock.advance(TTL + 1)
    with caplog.at_level(logging.WARNING, "lifeboat.agent"):
        agent.election.renewal_failed("no etcd endpoint answered")
    assert not agent.election.leading and changes == [False]
    assert "etcd unreachable past our lease's end" in caplog.text

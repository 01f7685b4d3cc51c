"""The agent's daemon loop (after Patroni's): one cycle every few seconds until stopped.

Each cycle renews this agent's lease and takes or confirms leadership; the active agent
then runs a backup when one is due (and prunes after it), and a drill when one is due.
Signal handlers only set the stop flag. A cycle's failure is logged and counted and the
loop goes on; a failed job is retried on later cycles with exponential backoff while its
tick stays unrecorded. A stop abandons a backup in flight (no manifest), resigns (the
lease is revoked, so another agent can lead at once) and ends the loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from lifeboat.clock import Clock
from lifeboat.agent.capture import CaptureSupervisor
from lifeboat.agent.election import Election, TickRecord
from lifeboat.agent.jobs import Abandoned, BackupOutcome, LeadershipLost
from lifeboat.agent.metrics import AgentMetrics
from lifeboat.agent.schedule import check_cron, due_tick
from lifeboat.capture.packing import PackResult
from lifeboat.errors import (
    BackendUnavailable, DecryptionError, EtcdAuthError, EtcdUnavailable, IntegrityError, LifeboatError,
    NoHealthyMember, RepositoryUnavailable, UsageError,
)

log = logging.getLogger("lifeboat.agent")

BackupRun = Callable[[datetime, Callable[[], bool], threading.Event], BackupOutcome]


@dataclass(frozen=True)
class AgentSettings:
    """How the loop runs; validated by :meth:`check`."""

    cluster: str
    agent_id: str
    backup_cron: str
    drill_cron: str | None = None
    lease_ttl: int = 15
    interval: float = 5.0
    health_threshold: float = 300.0
    backoff_base: float = 10.0
    backoff_max: float = 300.0

    def check(self) -> AgentSettings:
        check_cron(self.backup_cron, "agent backup schedule")
        if self.drill_cron is not None:
            check_cron(self.drill_cron, "agent drill schedule")
        if self.lease_ttl < 2:
            raise UsageError(f"agent lease TTL {self.lease_ttl}s is too short; use 2 seconds or more")
        if not 0 < self.interval <= self.lease_ttl / 3:
            raise UsageError(
                f"agent interval {self.interval}s must be more than 0 and at most a third of the "
                f"lease TTL ({self.lease_ttl}s), or the lease expires between cycles"
            )
        if self.backoff_base <= 0 or self.backoff_max < self.backoff_base:
            raise UsageError("agent backoff: base must be > 0 and max at least base")
        return self


@dataclass(frozen=True)
class Jobs:
    """The work of the active agent; prune, drill and pack are optional."""

    backup: BackupRun
    prune: Callable[[], int] | None = None
    drill: Callable[[threading.Event], bool] | None = None  # stops (DrillStopped) once the event is set
    pack: Callable[[threading.Event], PackResult] | None = None  # capture's small segments, after prune
    capture: CaptureSupervisor | None = None  # continuous capture, while this agent leads


class Backoff:
    """Exponential backoff on the monotonic clock: base, 2×base, ... up to max."""

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self.until = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.until

    def failed(self, now: float) -> float:
        delay = min(self.base * 2.0 ** self.failures, self.cap)
        self.failures += 1
        self.until = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.until = 0.0


def failure_reason(exc: BaseException) -> str:
    """A short, stable label for the failures metric."""
    for kind, reason in (
        (Abandoned, "abandoned"), (LeadershipLost, "lost_leadership"),
        (RepositoryUnavailable, "repository_unavailable"), (EtcdAuthError, "etcd_auth"),
        (EtcdUnavailable, "etcd_unavailable"), (NoHealthyMember, "no_healthy_member"),
        (IntegrityError, "integrity"), (BackendUnavailable, "backend_unavailable"),
        (UsageError, "config"), (DecryptionError, "config"), (LifeboatError, "failed"),
    ):
        if isinstance(exc, kind):
            return reason
    return "unexpected"


class Agent:
    """One agent process's loop."""

    def __init__(self, settings: AgentSettings, election: Election, jobs: Jobs,
                 metrics: AgentMetrics, clock: Clock, stop: threading.Event) -> None:
        self.settings = settings.check()
        self.election = election
        self.election.on_change = metrics.leader  # the metric drops when the loss is logged, not a cycle later
        self.jobs = jobs
        self.metrics = metrics
        self.clock = clock
        self.stop = stop
        self.backup_backoff = Backoff(settings.backoff_base, settings.backoff_max)
        self.drill_backoff = Backoff(settings.backoff_base, settings.backoff_max)
        self._conflicts: dict[str, str] = {}

    def run(self) -> int:
        """Cycle until stopped; returns the exit code (0)."""
        log.info("agent %s started for cluster %s", self.settings.agent_id, self.settings.cluster,
                 extra={"event": "agent_started"})
        try:
            while not self.stop.is_set():
                self.cycle()
                self.clock.wait(self.settings.interval, self.stop)
        finally:
            if self.jobs.capture is not None:
                self.jobs.capture.stop()  # commits what it received, before the lease goes
            self._resign()
        log.info("agent stopped", extra={"event": "agent_stopped"})
        return 0

    def _resign(self) -> None:
        try:
            self.election.resign()
        except LifeboatError as exc:
            log.warning("could not resign cleanly (the lease will expire on its own): %s", exc)
        self.metrics.leader(False)

    def cycle(self) -> bool:
        """One cycle; True when it finished without error."""
        try:
            self._cycle()
        except LifeboatError as exc:
            self.metrics.failed(failure_reason(exc))
            log.error("cycle failed: %s", exc, extra={"event": "cycle_failed", "reason": failure_reason(exc)})
            return False
        except Exception:  # one cycle's bug must not stop the loop (Patroni's rule)
            self.metrics.failed("unexpected")
            log.exception("cycle failed unexpectedly", extra={"event": "cycle_failed", "reason": "unexpected"})
            return False
        self.metrics.good_cycle()
        return True

    def _cycle(self) -> None:
        leading = self.election.refresh()
        self.metrics.leader(leading)
        self._check_configs()
        record = self.election.last_tick("backup")
        if record is not None:
            self._learn(record)
        if self.jobs.capture is not None:
            self.jobs.capture.lead(leading and not self.stop.is_set())
        if not leading or self.stop.is_set():
            return
        self._maybe_backup(record)
        if self.jobs.drill is not None and self.settings.drill_cron is not None:
            self._maybe_drill()

    def _check_configs(self) -> None:
        conflicts = self.election.config_conflicts()
        self.metrics.config_conflicts(len(conflicts))
        if conflicts and conflicts != self._conflicts:
            log.warning(
                "agents %s run with a different configuration for cluster %s than this one; "
                "make their config files agree", ", ".join(sorted(conflicts)), self.settings.cluster,
                extra={"event": "config_conflict"},
            )
        self._conflicts = conflicts

    def _learn(self, record: TickRecord) -> None:
        out = record.outcome
        if "duration" in out and "size" in out and "revision" in out:
            self.metrics.backup_succeeded(record.finished_at, out["duration"], out["size"], out["revision"], ours=False)

    def _maybe_backup(self, record: TickRecord | None) -> None:
        now = self.clock.now()
        tick = due_tick(self.settings.backup_cron, now, record.tick if record else None)
        if tick is None or not self.backup_backoff.ready(self.clock.monotonic()):
            return
        log.info("backup for tick %s starting", tick.isoformat(), extra={"event": "backup_started"})
        try:
            with self._renewing():
                outcome = self.jobs.backup(tick, self.election.confirm, self.stop)
        except LifeboatError as exc:
            if self.stop.is_set() and not isinstance(exc, Abandoned):
                # The upload was cut by our own stop; the store's error says only "aborted".
                raise Abandoned(f"backup for tick {tick.isoformat()} abandoned: the agent is stopping") from exc
            if not isinstance(exc, Abandoned):
                delay = self.backup_backoff.failed(self.clock.monotonic())
                log.error("backup for tick %s failed, retrying in %.0fs: %s", tick.isoformat(), delay, exc,
                          extra={"event": "backup_failed", "reason": failure_reason(exc)})
            raise
        self.backup_backoff.succeeded()
        if not outcome.adopted:
            self.metrics.backup_succeeded(outcome.finished_at, outcome.duration, outcome.size, outcome.revision)
        log.info("backup %s %s for tick %s (revision %d, %d bytes)", outcome.backup_id,
                 "adopted" if outcome.adopted else "committed", tick.isoformat(), outcome.revision,
                 outcome.size, extra={"event": "backup_committed", "backup_id": outcome.backup_id})
        done = TickRecord(tick, outcome.finished_at, self.settings.agent_id, outcome.as_record())
        if not self.election.record_tick("backup", done):
            raise LeadershipLost(f"backup {outcome.backup_id} committed, but leadership was lost "
                                 "before its tick was recorded; the next leader adopts it")
        if self.jobs.prune is not None:
            self._prune()
        if self.jobs.pack is not None:
            self._pack()

    def _prune(self) -> None:
        assert self.jobs.prune is not None
        try:
            with self._renewing():  # a prune of many backups outlives a lease too
                deleted = self.jobs.prune()
        except LifeboatError as exc:
            self.metrics.failed("prune")
            log.error("prune failed (retried after the next backup): %s", exc, extra={"event": "prune_failed"})
            return
        self.metrics.pruned(deleted)
        if deleted:
            log.info("pruned %d backups", deleted, extra={"event": "pruned"})

    def _pack(self) -> None:
        assert self.jobs.pack is not None
        try:
            with self._renewing():  # a day of small segments takes a while: the lease outlives it
                result = self.jobs.pack(self.stop)
        except LifeboatError as exc:
            self.metrics.failed("pack")
            log.error("packing capture segments failed (retried after the next backup): %s", exc,
                      extra={"event": "pack_failed"})
            return
        self.metrics.packed(result.packed)
        for refusal in result.refused:
            self.metrics.failed("pack")
            log.error("capture segments not packed: %s", refusal, extra={"event": "pack_failed"})
        if result.packs or result.deleted:
            log.info("packed %d capture segments into %d; deleted %d a checked pack holds", result.packed,
                     result.packs, result.deleted, extra={"event": "packed"})

    def _maybe_drill(self) -> None:
        assert self.jobs.drill is not None and self.settings.drill_cron is not None
        record = self.election.last_tick("drill")
        now = self.clock.now()
        tick = due_tick(self.settings.drill_cron, now, record.tick if record else None)
        if tick is None or not self.drill_backoff.ready(self.clock.monotonic()):
            return
        log.info("drill for tick %s starting", tick.isoformat(), extra={"event": "drill_started"})
        try:
            with self._renewing():
                passed = self.jobs.drill(self.stop)
        except LifeboatError as exc:
            if self.stop.is_set():
                # Stopped by our own stop: its etcd and files are gone; the tick is done again later.
                raise Abandoned(f"drill for tick {tick.isoformat()} abandoned: the agent is stopping") from exc
            self.drill_backoff.failed(self.clock.monotonic())
            raise
        self.drill_backoff.succeeded()
        self.metrics.drill(passed, self.clock.now())
        if not passed:
            self.metrics.failed("drill")
        log.log(logging.INFO if passed else logging.ERROR, "drill for tick %s %s", tick.isoformat(),
                "passed" if passed else "FAILED", extra={"event": "drill_finished", "passed": passed})
        self.election.record_tick("drill", TickRecord(tick, self.clock.now(), self.settings.agent_id,
                                                      {"passed": passed}))

    @contextmanager
    def _renewing(self) -> Iterator[None]:
        """Keep our lease alive from a thread while a long job runs in this one."""
        done = threading.Event()
        period = self.settings.lease_ttl / 3

        def renew() -> None:
            while not done.wait(period):
                try:
                    if not self.election.renew():
                        return  # expired: confirm() finds out before any commit
                except LifeboatError as exc:
                    log.warning("lease renewal failed: %s", exc)
                    self.election.renewal_failed(str(exc))

        thread = threading.Thread(target=renew, name="lease-renewer", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()



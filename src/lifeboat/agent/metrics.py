"""The agent's metrics, exposed with ``prometheus-client``.

The values are plain numbers behind a lock; one custom collector turns them into metric
families when Prometheus scrapes, so names, types, HELP lines, escaping and the text or
OpenMetrics format (chosen from the scrape's ``Accept`` header) are the library's.
``lifeboat_backup_age_seconds`` (the current RPO) is computed at scrape time from the
newest good backup this agent knows of, its own or, via etcd, another agent's; a value not
known yet (no backup, no drill) has no sample rather than a misleading 0.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.registry import Collector

from lifeboat.capture import CaptureStatus
from lifeboat.clock import Clock


@dataclass
class _Values:
    is_leader: int = 0
    last_success: float | None = None
    last_duration: float | None = None
    last_size: int | None = None
    last_revision: int | None = None
    backups: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    drill_last_result: int | None = None
    drill_last_run: float | None = None
    drill_runs: dict[str, int] = field(default_factory=dict)
    pruned: int = 0
    packed: int = 0
    config_conflicts: int = 0
    last_good_cycle: float | None = None
    last_good_cycle_wall: float | None = None
    cycles: int = 0


class AgentMetrics:
    """Thread-safe metric values of one agent."""

    def __init__(self, cluster: str, agent_id: str, version: str, clock: Clock) -> None:
        self.cluster = cluster
        self.agent_id = agent_id
        self.version = version
        self.clock = clock
        self._lock = threading.Lock()
        self._v = _Values()
        self._capture: CaptureStatus | None = None
        self._capturing: Callable[[], bool] = lambda: False
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Families(self))

    def capture(self, status: CaptureStatus, running: Callable[[], bool]) -> None:
        """Export continuous capture's status (read at scrape time; capture writes it)."""
        self._capture, self._capturing = status, running

    def capture_status(self) -> tuple[CaptureStatus | None, bool]:
        """Capture's status and whether it runs now, or (None, False) without capture."""
        return self._capture, self._capture is not None and self._capturing()

    def leader(self, leading: bool) -> None:
        with self._lock:
            self._v.is_leader = int(leading)

    def backup_succeeded(self, finished: datetime, duration: float, size: int, revision: int,
                         *, ours: bool = True) -> None:
        """A good backup; ``ours=False`` when another agent took it (learned from etcd)."""
        with self._lock:
            stamp = finished.timestamp()
            if self._v.last_success is not None and stamp <= self._v.last_success:
                return
            self._v.last_success = stamp
            self._v.last_duration = duration
            self._v.last_size = size
            self._v.last_revision = revision
            if ours:
                self._v.backups += 1

    def failed(self, reason: str) -> None:
        with self._lock:
            self._v.failures[reason] = self._v.failures.get(reason, 0) + 1

    def drill(self, passed: bool, when: datetime) -> None:
        result = "pass" if passed else "fail"
        with self._lock:
            self._v.drill_last_result = int(passed)
            self._v.drill_last_run = when.timestamp()
            self._v.drill_runs[result] = self._v.drill_runs.get(result, 0) + 1

    def pruned(self, count: int) -> None:
        with self._lock:
            self._v.pruned += count

    def packed(self, count: int) -> None:
        with self._lock:
            self._v.packed += count

    def config_conflicts(self, count: int) -> None:
        with self._lock:
            self._v.config_conflicts = count

    def good_cycle(self) -> None:
        """A cycle finished without error just now."""
        with self._lock:
            self._v.last_good_cycle = self.clock.monotonic()
            self._v.last_good_cycle_wall = self.clock.now().timestamp()
            self._v.cycles += 1

    def last_good_cycle(self) -> float | None:
        """The clock's monotonic time of the newest good cycle."""
        with self._lock:
            return self._v.last_good_cycle

    def last_success(self) -> float | None:
        with self._lock:
            return self._v.last_success

    def values(self) -> _Values:
        """A consistent copy of every value, for one scrape."""
        with self._lock:
            return replace(self._v, failures=dict(self._v.failures), drill_runs=dict(self._v.drill_runs))

    def render(self) -> str:
        """The exposition text (Prometheus' text format 0.0.4)."""
        return generate_latest(self.registry).decode()

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The body and content type for a scrape that sent ``accept``; the text format when
        prometheus-client cannot serve what it asks for (it raises TypeError for a version
        such as ``version=x``)."""
        try:
            encoder, content_type = choose_encoder(accept or "")
            return encoder(self.registry), content_type
        except (TypeError, ValueError):
            return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4


class _Families(Collector):
    """The agent's metric families, built from one copy of the values at each scrape."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        v = m.values()
        info = GaugeMetricFamily("lifeboat_agent_info", "Agent identity; always 1.",
                                 labels=["agent", "cluster", "version"])
        info.add_metric([m.agent_id, m.cluster, m.version], 1)
        yield info
        yield _gauge("lifeboat_agent_is_leader", "1 while this agent is the active agent of its cluster.",
                     v.is_leader)
        yield _gauge("lifeboat_agent_config_conflicts",
                     "Other agents of this cluster running with a different configuration.", v.config_conflicts)
        yield _gauge("lifeboat_agent_last_good_cycle_timestamp_seconds",
                     "Unix time of the newest cycle that finished without error.", v.last_good_cycle_wall)
        yield CounterMetricFamily("lifeboat_agent_cycles", "Agent cycles that finished without error.",
                                  value=v.cycles)
        yield _gauge("lifeboat_backup_last_success_timestamp_seconds",
                     "Unix time the newest good backup finished.", v.last_success)
        yield _gauge("lifeboat_backup_age_seconds", "Seconds since the newest good backup finished (the current RPO).",
                     None if v.last_success is None else max(m.clock.now().timestamp() - v.last_success, 0.0))
        yield _gauge("lifeboat_backup_last_duration_seconds", "Duration of the newest good backup.", v.last_duration)
        yield _gauge("lifeboat_backup_last_size_bytes", "Stored size of the newest good backup.", v.last_size)
        yield _gauge("lifeboat_backup_last_revision", "etcd revision of the newest good backup.", v.last_revision)
        yield CounterMetricFamily("lifeboat_backups", "Backups this agent took and committed.", value=v.backups)
        yield _counter("lifeboat_backup_failures", "Failed backup, prune, drill or pack attempts by reason.",
                       "reason", v.failures)
        yield _gauge("lifeboat_drill_last_result", "1 if the newest drill passed, 0 if it failed.",
                     v.drill_last_result)
        yield _gauge("lifeboat_drill_last_run_timestamp_seconds", "Unix time of the newest drill.", v.drill_last_run)
        yield _counter("lifeboat_drills", "Drills run by result.", "result", v.drill_runs)
        yield CounterMetricFamily("lifeboat_pruned_backups", "Backups deleted by retention.", value=v.pruned)
        yield CounterMetricFamily("lifeboat_capture_packed_segments",
                                  "Capture segments written into packs (fewer, larger segments).", value=v.packed)
        capture, running = m.capture_status()
        if capture is not None:
            yield from _capture_families(capture, running, m.clock.now())


def _capture_families(c: CaptureStatus, running: bool, now: datetime) -> Iterator[Metric]:
    yield _gauge("lifeboat_capture_running", "1 while this agent captures (it leads and capture is enabled).",
                 int(running))
    yield _gauge("lifeboat_capture_fenced", "1 while this agent's capture may not write: another capture "
                 "(e.g. 'lifeboat capture' run by hand) holds the cluster's capture lock, or it no longer leads.",
                 int(running and c.fenced is not None))
    yield _gauge("lifeboat_capture_lag_seconds", "How long the oldest revision not yet in the repository has "
                 "waited: received and not stored, or in etcd and not delivered by a stalled watch (seen at an "
                 "idle look); 0 when everything is stored.",
                 c.lag_seconds(now) if running else None)
    yield _gauge("lifeboat_capture_last_revision", "The newest etcd revision in a closed segment (uploaded, "
                 "or waiting for the repository in the upload queue or the spool).",
                 c.last_revision or None)
    yield _gauge("lifeboat_capture_last_seen_timestamp_seconds",
                 "Unix time capture saw the newest committed revision.",
                 c.last_seen.timestamp() if c.last_seen else None)
    yield _gauge("lifeboat_capture_spooled_segments", "Segments waiting in the local spool for the repository.",
                 c.spooled)
    yield CounterMetricFamily("lifeboat_capture_segments", "Capture segments committed.", value=c.segments)
    yield CounterMetricFamily("lifeboat_capture_events", "etcd events committed in segments.", value=c.events)
    yield CounterMetricFamily("lifeboat_capture_gaps", "Gaps recorded (a chain ended; a new base was taken).",
                              value=c.gaps)
    yield CounterMetricFamily("lifeboat_capture_base_backups", "Base backups taken to start a chain.",
                              value=c.bases)


def _gauge(name: str, help_: str, value: float | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_)
    if value is not None:
        family.add_metric([], value)
    return family


def _counter(name: str, help_: str, label: str, counts: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_, labels=[label])
    for key, count in sorted(counts.items()):
        family.add_metric([key], count)
    return family

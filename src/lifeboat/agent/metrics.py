"""The agent's metrics, rendered in Prometheus' text exposition format (version 0.0.4).

The values are plain numbers behind a lock; :meth:`AgentMetrics.render` writes them out.
``lifeboat_backup_age_seconds`` (the current RPO) is computed at scrape time from the
newest good backup this agent knows of, its own or, via etcd, another agent's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from lifeboat.capture import CaptureStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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
    config_conflicts: int = 0
    last_good_cycle: float | None = None
    last_good_cycle_wall: float | None = None
    cycles: int = 0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class AgentMetrics:
    """Thread-safe metric values of one agent."""

    def __init__(self, cluster: str, agent_id: str, version: str, now: Callable[[], datetime]) -> None:
        self.cluster = cluster
        self.agent_id = agent_id
        self.version = version
        self._now = now
        self._lock = threading.Lock()
        self._v = _Values()
        self._capture: CaptureStatus | None = None
        self._capturing: Callable[[], bool] = lambda: False

    def capture(self, status: CaptureStatus, running: Callable[[], bool]) -> None:
        """Export continuous capture's status (read at scrape time; capture writes it)."""
        self._capture, self._capturing = status, running

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

    def config_conflicts(self, count: int) -> None:
        with self._lock:
            self._v.config_conflicts = count

    def good_cycle(self, when: float) -> None:
        """A cycle that finished without error, at monotonic time ``when``."""
        with self._lock:
            self._v.last_good_cycle = when
            self._v.last_good_cycle_wall = self._now().timestamp()
            self._v.cycles += 1

    def last_good_cycle(self) -> float | None:
        with self._lock:
            return self._v.last_good_cycle

    def last_success(self) -> float | None:
        with self._lock:
            return self._v.last_success

    def render(self) -> str:
        """The exposition text."""
        with self._lock:
            v = replace(self._v, failures=dict(self._v.failures), drill_runs=dict(self._v.drill_runs))
        now = self._now().timestamp()
        out: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], float]]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            sample_name = name + "_total" if kind == "counter" else name
            for labels, value in samples:
                text = ",".join(f'{k}="{_escape(val)}"' for k, val in sorted(labels.items()))
                out.append(f"{sample_name}{{{text}}} {_number(value)}" if text else f"{sample_name} {_number(value)}")

        def gauge(name: str, help_: str, value: float | None) -> None:
            metric(name, "gauge", help_, [] if value is None else [({}, value)])

        metric("lifeboat_agent_info", "gauge", "Agent identity; always 1.",
               [({"cluster": self.cluster, "agent": self.agent_id, "version": self.version}, 1)])
        gauge("lifeboat_agent_is_leader", "1 while this agent is the active agent of its cluster.", v.is_leader)
        gauge("lifeboat_agent_config_conflicts",
              "Other agents of this cluster running with a different configuration.", v.config_conflicts)
        gauge("lifeboat_agent_last_good_cycle_timestamp_seconds",
              "Unix time of the newest cycle that finished without error.", v.last_good_cycle_wall)
        metric("lifeboat_agent_cycles", "counter", "Agent cycles that finished without error.",
               [({}, v.cycles)])
        gauge("lifeboat_backup_last_success_timestamp_seconds",
              "Unix time the newest good backup finished.", v.last_success)
        gauge("lifeboat_backup_age_seconds",
              "Seconds since the newest good backup finished (the current RPO).",
              None if v.last_success is None else max(now - v.last_success, 0.0))
        gauge("lifeboat_backup_last_duration_seconds", "Duration of the newest good backup.", v.last_duration)
        gauge("lifeboat_backup_last_size_bytes", "Stored size of the newest good backup.", v.last_size)
        gauge("lifeboat_backup_last_revision", "etcd revision of the newest good backup.", v.last_revision)
        metric("lifeboat_backups", "counter", "Backups this agent took and committed.", [({}, v.backups)])
        metric("lifeboat_backup_failures", "counter", "Failed backup, prune or drill attempts by reason.",
               [({"reason": r}, n) for r, n in sorted(v.failures.items())])
        gauge("lifeboat_drill_last_result", "1 if the newest drill passed, 0 if it failed.", v.drill_last_result)
        gauge("lifeboat_drill_last_run_timestamp_seconds", "Unix time of the newest drill.", v.drill_last_run)
        metric("lifeboat_drills", "counter", "Drills run by result.",
               [({"result": r}, n) for r, n in sorted(v.drill_runs.items())])
        metric("lifeboat_pruned_backups", "counter", "Backups deleted by retention.", [({}, v.pruned)])
        if self._capture is not None:
            self._render_capture(self._capture, self._capturing(), now, metric, gauge)
        return "\n".join(out) + "\n"

    @staticmethod
    def _render_capture(c: CaptureStatus, running: bool, now: float,
                        metric: Callable[[str, str, str, list[tuple[dict[str, str], float]]], None],
                        gauge: Callable[[str, str, float | None], None]) -> None:
        gauge("lifeboat_capture_running", "1 while this agent captures (it leads and capture is enabled).",
              int(running))
        gauge("lifeboat_capture_lag_seconds", "How long the oldest revision received but not yet committed "
              "has waited (0 when everything received is committed).",
              c.lag_seconds(datetime.fromtimestamp(now, timezone.utc)) if running else None)
        gauge("lifeboat_capture_last_revision", "The newest etcd revision committed to the repository.",
              c.last_revision or None)
        gauge("lifeboat_capture_last_seen_timestamp_seconds",
              "Unix time capture saw the newest committed revision.",
              c.last_seen.timestamp() if c.last_seen else None)
        gauge("lifeboat_capture_spooled_segments", "Segments waiting in the local spool for the repository.",
              c.spooled)
        metric("lifeboat_capture_segments", "counter", "Capture segments committed.", [({}, c.segments)])
        metric("lifeboat_capture_events", "counter", "etcd events committed in segments.", [({}, c.events)])
        metric("lifeboat_capture_gaps", "counter", "Gaps recorded (a chain ended; a new base was taken).",
               [({}, c.gaps)])
        metric("lifeboat_capture_base_backups", "counter", "Base backups taken to start a chain.",
               [({}, c.bases)])

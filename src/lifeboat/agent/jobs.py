"""What the active agent does on a tick: a backup that only the leader may commit.

The backup is :func:`lifeboat.backup.pipeline.take_backup`, with two guards around it:

* the snapshot stream stops at the next chunk once the agent is asked to stop, so an
  upload in flight is abandoned and take_backup removes what it uploaded;
* the commit (the create-only manifest write that makes a backup exist) happens only
  after leadership was confirmed a moment before, and never while stopping.

Each backup carries the tick it was taken for as a label. A new leader that finds a
committed backup for the tick it is about to run adopts it instead of taking a second
one (the previous leader may have committed it and died before recording the tick).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from lifeboat.agent.election import TickOutcome
from lifeboat.backup.pipeline import BackupOptions, SnapshotSource, take_backup
from lifeboat.catalog.manifest import BackupStatus, Manifest
from lifeboat.catalog.repository import BackupRepository
from lifeboat.errors import OperationFailed
from lifeboat.etcdapi.model import Alarm, MemberList, MemberStatus

TICK_LABEL = "lifeboat.tick"
ADOPTION_MARGIN = timedelta(hours=1)
AGENT_LABEL = "lifeboat.agent"


class Abandoned(OperationFailed):
    """The agent was asked to stop; the backup in progress was dropped uncommitted."""


class LeadershipLost(OperationFailed):
    """This agent stopped being the active agent before it could commit."""


@dataclass(frozen=True)
class BackupOutcome:
    """A committed backup as the agent reports it."""

    backup_id: str
    finished_at: datetime
    duration: float
    size: int
    revision: int
    adopted: bool = False

    @classmethod
    def of(cls, manifest: Manifest, *, adopted: bool = False) -> BackupOutcome:
        started = _parse_time(manifest.started_at)
        finished = _parse_time(manifest.finished_at)
        return cls(
            backup_id=manifest.id, finished_at=finished,
            duration=max((finished - started).total_seconds(), 0.0),
            size=sum(o.size for o in manifest.objects),
            revision=manifest.snapshot.revision, adopted=adopted,
        )

    def as_record(self) -> TickOutcome:
        return {"backup_id": self.backup_id, "duration": self.duration, "size": self.size,
                "revision": self.revision}


def _parse_time(text: str | None) -> datetime:
    if not text:
        return datetime.fromtimestamp(0, timezone.utc)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class BackupJob:
    """Takes the backup of one tick."""

    def __init__(self, etcd: SnapshotSource, open_repository: Callable[[], BackupRepository],
                 options: BackupOptions, agent_id: str, now: Callable[[], datetime]) -> None:
        self.etcd = etcd
        self.open_repository = open_repository
        self.options = options
        self.agent_id = agent_id
        self.now = now

    def run(self, tick: datetime, may_commit: Callable[[], bool], stop: threading.Event) -> BackupOutcome:
        """Back up for ``tick``, or adopt a backup already committed for it."""
        repo = self.open_repository()
        tick_text = tick.isoformat()
        # A backup for this tick started after it (its id says when): only those are read. The
        # hour of margin covers an agent whose wall clock was stepped back meanwhile.
        for manifest in repo.manifests(self.options.cluster, since=tick - ADOPTION_MARGIN):
            if manifest.labels.get(TICK_LABEL) == tick_text and manifest.status == BackupStatus.COMPLETE:
                return BackupOutcome.of(manifest, adopted=True)
        labels = {**self.options.labels, TICK_LABEL: tick_text, AGENT_LABEL: self.agent_id}
        guarded = _GuardedRepository(repo, may_commit, stop)
        manifest = take_backup(_StoppableSource(self.etcd, stop), guarded,
                               replace(self.options, labels=labels), now=self.now)
        return BackupOutcome.of(manifest)


class _GuardedRepository(BackupRepository):
    """The repository, with a commit that checks the agent may still commit."""

    def __init__(self, repo: BackupRepository, may_commit: Callable[[], bool], stop: threading.Event) -> None:
        super().__init__(repo.store, repo.clock)
        self._may_commit = may_commit
        self._stop = stop

    def commit(self, manifest: Manifest) -> None:
        if self._stop.is_set():
            raise Abandoned(f"backup {manifest.id} abandoned uncommitted: the agent is stopping")
        if not self._may_commit():
            raise LeadershipLost(
                f"backup {manifest.id} not committed: this agent is no longer the active agent"
            )
        super().commit(manifest)


class _StoppableSource:
    """The etcd connection, with a snapshot stream that ends early once ``stop`` is set."""

    def __init__(self, etcd: SnapshotSource, stop: threading.Event) -> None:
        self._etcd = etcd
        self._stop = stop

    def member_list(self) -> MemberList:
        return self._etcd.member_list()

    def status(self, endpoint: str) -> MemberStatus:
        return self._etcd.status(endpoint)

    def alarms(self) -> list[Alarm]:
        return self._etcd.alarms()

    def snapshot(self, endpoint: str) -> Iterator[bytes]:
        return _StoppableStream(self._etcd.snapshot(endpoint), self._stop)


# How often a snapshot stream's watcher looks whether the stream has ended by itself.
_WATCH_INTERVAL = 0.2


class _StoppableStream(Iterator[bytes]):
    """A snapshot stream that ``stop`` ends, also while it waits on a stalled etcd.

    Between chunks the flag is looked at; a read that waits (etcd frozen, a slow disk) is
    cancelled by a watcher thread the moment ``stop`` is set, as the CLI's SIGTERM does:
    gRPC's keepalive would take about 70 s to give up, past the 30 s systemd and Kubernetes
    grant the agent before SIGKILL (deploy/). ``cancel`` passes on to the stream too.
    """

    def __init__(self, chunks: Iterator[bytes], stop: threading.Event) -> None:
        self._chunks, self._stop = chunks, stop
        self._ended = threading.Event()
        self._watching = False

    def _start_watching(self) -> None:
        # At the first read, not before: whoever reads a stream closes it (a stream never read
        # would leave its watcher polling until the agent stops).
        self._watching = True
        if getattr(self._chunks, "cancel", None) is not None:
            threading.Thread(target=self._watch, name="lifeboat-snapshot-stop", daemon=True).start()

    def _watch(self) -> None:
        while not self._ended.is_set():
            if self._stop.wait(_WATCH_INTERVAL):
                self.cancel()
                return

    def __next__(self) -> bytes:
        if not self._watching:
            self._start_watching()
        if self._stop.is_set():
            self.close()
            raise Abandoned("backup abandoned mid-upload: the agent is stopping")
        try:
            return next(self._chunks)
        except StopIteration:
            self._ended.set()
            raise
        except Exception as exc:
            self.close()
            if self._stop.is_set():
                raise Abandoned("backup abandoned mid-upload: the agent is stopping") from exc
            raise

    def cancel(self) -> None:
        cancel = getattr(self._chunks, "cancel", None)
        if cancel is not None:
            cancel()

    def close(self) -> None:
        self._ended.set()
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

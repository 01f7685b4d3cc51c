"""A restore drill: prove a backup restores into a working etcd that serves its data.

Steps, each timed: verify the backup as ``verify`` does (keeping the raw snapshot), read the
snapshot offline (live keys, a sample of them, etcd's HashKV), restore it into a throwaway
data dir with the writer ``lifeboat restore`` would use (lifeboat's own for etcd 3.4 and 3.5,
else the restore tool; the caller chooses, see :class:`DataDirWriter`), start a throwaway etcd
on free 127.0.0.1 ports, then check the revision, the number of keys, HashKV and the sampled
key/values against the snapshot.
Everything lives in one temp dir that is removed, and the etcd is stopped, whatever
happens. A backup that fails verification is never restored.
"""

from __future__ import annotations

import random
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from lifeboat.catalog.age_keys import Identity
from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.repository import BackupRepository
from lifeboat.clock import Clock, SystemClock
from lifeboat.errors import LifeboatError, NoRoom, OperationFailed
from lifeboat.etcd import EtcdClient
from lifeboat.etcd.binaries import RestoreTool, SnapshotRestore, find_etcd_server, find_restore_tool
from lifeboat.etcd.data_dir import WAL_SEGMENT_BYTES
from lifeboat.etcd.local import LocalEtcd
from lifeboat.snapshot import KeyValue, iter_latest
from lifeboat.snapshot.mvcc import served_revision
from lifeboat.snapshot.spool import ROOM_HINT, spool_dir
from lifeboat.snapshot.writer import SUGGESTED_BUMP, bump_restored_db
from lifeboat.disk import FreeSpace, RoomReport, free_bytes, require_room
from lifeboat.verify.backup import Check, Progress, VerifyReport, replay_need, require_verify_room, verify_backup
from lifeboat.verify.kv_hash import OfflineHashKV, offline_hash_kv

DRILL_MEMBER = "lifeboat-drill"
SAMPLE_SIZE = 500
# How long the throwaway etcd may take to serve. etcd reads every revision of its db into its
# index before it answers, so the wait grows with the db: an 8 GiB one took over 60 s on a
# loaded 2-core machine (the drill of 2026-12-01 failed there with a fixed 60 s).
READY_TIMEOUT = 60.0
READY_PER_GIB = 30.0


@dataclass(frozen=True)
class DrillReplay:
    """How a drill of a point in time brings its fetched snapshot forward to the point."""

    # The capture segments it downloads, staged on disk beside the snapshot while it replays.
    segment_bytes: int
    # (snapshot, rows_room) -> the revision it reached: the events committed into the snapshot
    # itself; ``rows_room`` is told the bytes of records it may add before any is written.
    run: Callable[[Path, Callable[[int], None]], int]


class DataDirWriter(Protocol):
    """What writes the throwaway member's data dir: the restore tool itself, or lifeboat's own
    writer standing in for it (``lifeboat.restore.native.NativeRestore``), as a restore would."""

    @property
    def can_bump_revision(self) -> bool: ...

    def describe(self) -> str: ...

    def run(self, restore: SnapshotRestore) -> None: ...


@runtime_checkable
class CommitsIntoSnapshot(Protocol):
    """A writer that can make the snapshot file itself the member's db, committed into and moved,
    not copied (lifeboat's own, as ``lifeboat restore`` uses it), and compare the committed rows
    with the snapshot's as the restore does."""

    def commit_into_snapshot(self, restore: SnapshotRestore, revision: int) -> None: ...


ChooseWriter = Callable[[RestoreTool], DataDirWriter]


def writer_kind(writer: DataDirWriter) -> str:
    """``--restore-with``'s name for ``writer``: "tool" for etcdutl/etcdctl, else "lifeboat"."""
    return "tool" if isinstance(writer, RestoreTool) else "lifeboat"


def ready_timeout_for(db_bytes: int) -> float:
    """The wait for a member starting on a db of ``db_bytes``: 60 s plus 30 s per GiB."""
    return READY_TIMEOUT + READY_PER_GIB * db_bytes / (1 << 30)


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float


@dataclass
class DrillReport:
    """What the drill checked and how long each phase took; ``verify`` is the backup check."""

    backup_id: str
    verify: VerifyReport
    checks: list[Check] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    restore_tool: str | None = None  # the writer of the restored data dir, described
    restore_with: str | None = None  # "lifeboat" or "tool", as --restore-with names them
    etcd: str | None = None

    @property
    def ok(self) -> bool:
        return self.verify.ok and bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok

    def first_failure(self) -> Check | None:
        return self.verify.first_failure() or next((c for c in self.checks if not c.ok), None)

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    @contextmanager
    def timed(self, name: str, clock: Clock) -> Iterator[None]:
        """Record how long the block took on ``clock`` as phase ``name``, also when it raises."""
        started = clock.monotonic()
        try:
            yield
        finally:
            self.phases.append(Phase(name, round(clock.monotonic() - started, 3)))


@dataclass(frozen=True)
class SnapshotFacts:
    """What the drill expects from the restored etcd, read offline from the snapshot."""

    revision: int
    live_keys: int
    sample: tuple[KeyValue, ...]
    hash_kv: OfflineHashKV
    leased_keys: int = 0


class DrillStopped(OperationFailed):
    """The drill was asked to stop (the agent is stopping); its etcd is stopped and its files removed."""


def _stop_check(stop: threading.Event | None) -> Callable[[], None]:
    def check() -> None:
        if stop is not None and stop.is_set():
            raise DrillStopped("drill stopped before it finished: asked to stop")
    return check


def run_drill(
    repo: BackupRepository, manifest: Manifest, identities: Sequence[Identity] | None, *,
    choose_writer: ChooseWriter,
    tmp_dir: Path | None = None,
    restore_tool: Path | None = None,
    etcd_binary: Path | None = None,
    sample_size: int = SAMPLE_SIZE,
    ready_timeout: float | None = None,
    progress: Progress = lambda stage, done: None,
    replay: DrillReplay | None = None,
    free_space: FreeSpace = free_bytes,
    room: RoomReport = lambda need: None,
    clock: Clock | None = None,
    stop: threading.Event | None = None,
) -> DrillReport:
    """Drill ``manifest``'s backup; the report says what failed (nothing is raised for that).

    ``choose_writer`` gets the restore tool found for the snapshot and returns what writes the
    data dirs: the tool, or lifeboat's writer in its stead (``lifeboat.restore.native.native_or``,
    as ``lifeboat restore`` chooses).

    ``replay`` brings the verified snapshot forward to a point in time (capture's events
    replayed offline, committed into the file itself); the drill then checks the revision it
    reached. What its rows add, copied once more by the first restore, is checked once its
    segments are surveyed: NoRoom (the need told to ``room`` first) before any row is written.

    ``ready_timeout``: how long each throwaway etcd may take to serve (default: by the db's
    size, :func:`ready_timeout_for`).

    Raises UsageError when no fit restore tool or etcd binary is found, and NoRoom when the
    copies it makes (and a replay's staged segments) do not fit (``room`` is told that need
    first), before any download, or when a restore's writer finds the disk full later (filled
    meanwhile): the disk, not the backup. DecryptionError when no identity given opens it:
    the configuration, not the backup.
    Phases are timed, and the throwaway etcd waited for, on ``clock`` (the system's by default).
    Once ``stop`` is set, DrillStopped is raised at the next downloaded piece, phase or poll of
    the throwaway etcd: the etcd is stopped and the temp dir removed on the way out.
    """
    clock = clock or SystemClock()
    check = _stop_check(stop)

    def fetched(stage: str, done: int) -> None:
        check()
        progress(stage, done)

    version = manifest.source.etcd_version
    tool = find_restore_tool(restore_tool, etcd_binary=etcd_binary, snapshot_version=version)
    server = find_etcd_server(etcd_binary, tool=tool, snapshot_version=version)
    writer = choose_writer(tool)
    with spool_dir("drill", tmp_dir) as tmp:
        staged = replay.segment_bytes if replay is not None else 0
        require_verify_room(manifest, Path(tmp).parent, None, free_space,
                            extra=drill_extra_bytes(manifest.snapshot.total_size) + staged, report=room,
                            extra_what="a restored copy" + (", the capture segments it replays" if staged else ""))
        work = Path(tmp)
        snapshot = work / "snapshot.db"
        started = clock.monotonic()
        verified = verify_backup(repo, manifest, identities, tmp_dir=work,
                                 keep_snapshot=snapshot, progress=fetched)
        report = DrillReport(
            manifest.id, verified,
            phases=[Phase("fetch and verify", round(clock.monotonic() - started, 3))],
            restore_tool=writer.describe(), restore_with=writer_kind(writer),
            etcd=f"etcd {server.version} at {server.path}",
        )
        if not report.verify.ok:
            return report
        revision = manifest.snapshot.revision
        check()
        if replay is not None:
            try:
                with report.timed("replay capture", clock):
                    revision = replay.run(snapshot, _rows_room(snapshot, Path(tmp).parent, free_space, room))
                report.add("replay capture", True, f"capture replayed up to revision {revision}")
            except NoRoom:
                raise  # exit 5, as when the drill's need is refused up front
            except LifeboatError as exc:
                report.add("replay capture", False, str(exc))
                return report
        if ready_timeout is None:
            ready_timeout = ready_timeout_for(snapshot.stat().st_size)
        check()
        _restore_and_check(report, tool, writer, server.path, snapshot, revision,
                           work, sample_size, ready_timeout, clock, check)
    return report


def _rows_room(snapshot: Path, where: Path, free_space: FreeSpace, room: RoomReport) -> Callable[[int], None]:
    """The check a point's replay makes once it knows its rows: they grow the snapshot, which
    the first restore then copies (with a WAL segment) beside it; ``where`` is named (the temp
    dir the drill's own is in, as its first need names)."""
    def check(rows: int) -> None:
        require_room(where, replay_need(snapshot, rows, copies=1),
                     "the drill's replay (the rows it adds to the snapshot, then the first restore's "
                     "copy of the grown db)", ROOM_HINT, free_space, room)
    return check


def drill_extra_bytes(snapshot_size: int) -> int:
    """What a drill needs beside the snapshot it fetches: the first throwaway member's data dir
    (a copy of the snapshot's db, which the second restore still reads, and a WAL segment). A
    replayed point is committed into the fetched snapshot itself; what its rows add, to the
    snapshot and to that copy, is known and checked once its segments are surveyed
    (``_rows_room``), before any is written. The second restore comes after the first data dir is
    removed and copies nothing: lifeboat's writer commits it into the snapshot file itself,
    which moves into the data dir; the restore tool's copy takes the first one's room."""
    return snapshot_size + WAL_SEGMENT_BYTES


def _restore_and_check(
    report: DrillReport, tool: RestoreTool, writer: DataDirWriter, etcd_binary: Path, snapshot: Path,
    revision: int, work: Path, sample_size: int, ready_timeout: float, clock: Clock, check: Callable[[], None],
) -> None:
    try:
        with report.timed("read snapshot offline", clock):
            facts = read_snapshot_facts(snapshot, revision, sample_size)
        etcd = LocalEtcd(etcd_binary, DRILL_MEMBER, work / "data", work / "etcd.log")
        check()
        with report.timed("restore", clock):
            writer.run(_member_restore(snapshot, etcd))
        report.add("restore", True, f"{_writer_name(writer, tool)} restored into a temp dir")
        check()
        with etcd:
            with report.timed("start etcd", clock):
                etcd.wait_ready(ready_timeout, clock, check=check)
            with report.timed("check", clock), etcd.client() as client:
                check_restored(report, client, etcd.client_url, facts)
            with report.timed("stop etcd", clock):
                etcd.stop()
        shutil.rmtree(etcd.data_dir)  # room for the bumped restore
        check()
        _bumped_restore(report, tool, writer, etcd_binary, snapshot, facts, work, ready_timeout, clock, check)
    except (NoRoom, DrillStopped):
        raise  # the disk filled meanwhile (exit 5), or asked to stop: neither is a fault of the backup
    except LifeboatError as exc:
        report.add("drill", False, str(exc))


def _writer_name(writer: DataDirWriter, tool: RestoreTool) -> str:
    return "lifeboat's writer" if writer_kind(writer) == "lifeboat" else f"{tool.kind} {tool.version}"


def _bumped_restore(report: DrillReport, tool: RestoreTool, writer: DataDirWriter, etcd_binary: Path,
                    snapshot: Path, facts: SnapshotFacts, work: Path, ready_timeout: float, clock: Clock,
                    check: Callable[[], None]) -> None:
    """Restore again with the revision bump a real restore applies, and check etcd honours it.

    The first restore keeps the snapshot's revision so HashKV can be compared exactly; this
    one proves what ``lifeboat restore`` relies on: etcd starts at the bumped revision and
    refuses a watch from the snapshot's revision as compacted.
    """
    etcd = LocalEtcd(etcd_binary, DRILL_MEMBER, work / "data-bumped", work / "etcd-bumped.log")
    with report.timed("bumped restore", clock):
        by_writer = SUGGESTED_BUMP if writer.can_bump_revision else None
        if by_writer and isinstance(writer, CommitsIntoSnapshot):
            # The snapshot is read no more: like 'lifeboat restore', commit into it, no copy.
            writer.commit_into_snapshot(_member_restore(snapshot, etcd, by_writer), facts.revision)
        else:
            writer.run(_member_restore(snapshot, etcd, by_writer))
        if by_writer:
            who = "lifeboat's writer" if writer_kind(writer) == "lifeboat" else f"{tool.kind} --bump-revision"
        else:
            bump_restored_db(etcd.data_dir / "member" / "snap" / "db", SUGGESTED_BUMP)
            who = "lifeboat"
    check()
    with etcd:
        with report.timed("start bumped etcd", clock):
            etcd.wait_ready(ready_timeout, clock, check=check)
        with report.timed("check bumped", clock), etcd.client() as client:
            check_bumped(report, client, etcd.client_url, facts, who)
        etcd.stop()


def check_bumped(report: DrillReport, client: EtcdClient, endpoint: str, facts: SnapshotFacts,
                 who: str) -> None:
    """The bumped etcd serves the snapshot's keys at revision + bump, compacted there."""
    expected = facts.revision + SUGGESTED_BUMP
    served = client.status(endpoint).revision
    before = served_revision(facts.revision)
    refused = client.refuses_watch_from(before)
    # Reads at the snapshot's revision are compacted away: compare today's keys, which a lease
    # expiring in the restored etcd may have removed (so leased keys may be missing).
    counted = client.range(b"", prefix=True, limit=1, keys_only=True).count
    steady = [kv for kv in facts.sample if kv.lease == 0]
    mismatched = [kv.key for kv in steady if client.get(kv.key) != kv]
    ok = (served == expected and refused and not mismatched
          and facts.live_keys - facts.leased_keys <= counted <= facts.live_keys)
    report.add("bumped restore", ok,
               f"bumped by {who}: revision {served} (expected {expected}); a watch from revision "
               f"{before} is {'refused as compacted' if refused else 'ACCEPTED'}; {counted} keys "
               f"(snapshot: {facts.live_keys}); {len(steady) - len(mismatched)} of {len(steady)} "
               "sampled keys without a lease match")


def _member_restore(snapshot: Path, member: LocalEtcd, bump_revision: int | None = None) -> SnapshotRestore:
    """The restore of ``snapshot`` into ``member``'s data dir as a cluster of that member alone."""
    return SnapshotRestore(snapshot, member.data_dir, member.name, f"{member.name}={member.peer_url}",
                           f"lifeboat-drill-{uuid.uuid4().hex[:12]}", member.peer_url, bump_revision)


def read_snapshot_facts(snapshot: Path, revision: int, sample_size: int) -> SnapshotFacts:
    """Live key count, a seeded random sample of live keys, and HashKV at ``revision``.

    ``revision`` is the snapshot's own, already checked by verify against the manifest.
    """
    chooser = random.Random(revision)  # the same backup samples the same keys every drill
    sample: list[KeyValue] = []
    count = leased = 0
    for kv in iter_latest(snapshot):
        count += 1
        leased += kv.lease != 0
        if len(sample) < sample_size:
            sample.append(kv)
        else:
            slot = chooser.randrange(count)
            if slot < sample_size:
                sample[slot] = kv
    return SnapshotFacts(revision, count, tuple(sample), offline_hash_kv(snapshot, revision), leased)


def check_restored(report: DrillReport, client: EtcdClient, endpoint: str,
                   facts: SnapshotFacts) -> None:
    """Compare what the restored etcd serves with what the snapshot holds."""
    status = client.status(endpoint)
    # 3.5.1/3.4.23 cannot bump the revision on restore, so it must be the snapshot's exactly.
    # Reads below are pinned to that revision: a lease expiring in the restored etcd (its
    # keys deleted) cannot change them.
    report.add("revision", status.revision == served_revision(facts.revision),
               f"{status.revision} (snapshot: {facts.revision})")
    counted = client.range(b"", prefix=True, revision=facts.revision, limit=1,
                           keys_only=True).count
    report.add("key count", counted == facts.live_keys,
               f"{counted} keys (snapshot: {facts.live_keys} live keys)")
    expected = facts.hash_kv
    if expected.hash is None:
        report.add("hash", True, f"not comparable: the snapshot is compacted at "
                                 f"{expected.compact_revision}, its own revision")
    else:
        got = client.hash_kv(endpoint, facts.revision).hash
        report.add("hash", got == expected.hash,
                   f"HashKV {got} at revision {facts.revision} (offline: {expected.hash})")
    mismatched = [kv.key for kv in facts.sample
                  if client.get(kv.key, revision=facts.revision) != kv]
    detail = (f"{len(facts.sample)} sampled keys match" if not mismatched else
              f"{len(mismatched)} of {len(facts.sample)} differ, e.g. {mismatched[0]!r:.120}")
    report.add("sampled key/values", not mismatched, detail)

"""A snapshot of a cluster at any captured revision or time: base backup + replayed segments."""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from collections.abc import Callable, Generator, Sequence
from itertools import islice
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from lifeboat.catalog.age_keys import Identity
from lifeboat.catalog.chains import SegmentRef, segment_named
from lifeboat.catalog.codec import FrameBuffer
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.segments import Segment
from lifeboat.catalog.timeline import (
    RestorePoint, Timeline, Window, build_timeline, point_at_revision, point_at_time,
)
from lifeboat.errors import IntegrityError, OperationFailed, UsageError
from lifeboat.pitr.replay import (
    ReplayFacts, RowRun, StagedSegment, compaction_marks, compile_rows, lease_rows, stored_rows,
)
from lifeboat.snapshot.mvcc import read_lease_ids
from lifeboat.snapshot.writer import BucketChanges, commit_in_place, write_db
from lifeboat.verify.backup import verify_backup

Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class PointTarget:
    """What the user asked for: ``--to-revision R`` or ``--to-time T`` (one of them)."""

    revision: int | None = None
    moment: datetime | None = None

    def __post_init__(self) -> None:
        if (self.revision is None) == (self.moment is None):
            raise UsageError("give either --to-revision or --to-time, not both")
        if self.revision is not None and self.revision < 1:
            raise UsageError(f"--to-revision must be a revision of 1 or more, got {self.revision}")

    def describe(self) -> str:
        if self.revision is not None:
            return f"revision {self.revision}"
        assert self.moment is not None
        return self.moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """``--to-time``: RFC 3339 with ``Z`` or an offset (a time without one is ambiguous)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"--to-time {text!r} is not an RFC 3339 time such as 2026-12-01T03:04:05Z") from None
    if moment.tzinfo is None:
        raise UsageError(f"--to-time {text!r} has no offset; add Z (UTC) or e.g. +01:00")
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00:00+14:00: before the first UTC time there is
        raise UsageError(f"--to-time {text!r} is out of range") from None


def cluster_timeline(repo: BackupRepository, cluster: str) -> Timeline:
    return build_timeline(cluster, list(repo.manifests(cluster)), repo.chain_store.chains(cluster))


def find_point(repo: BackupRepository, cluster: str, target: PointTarget,
               identities: Sequence[Identity] | None) -> RestorePoint:
    """The base backup and segments that restore ``cluster`` to ``target``; UsageError if none can.

    A time after the repository clock's now is refused.
    """
    timeline = cluster_timeline(repo, cluster)
    if target.revision is not None:
        return point_at_revision(timeline, target.revision)
    assert target.moment is not None
    chains = repo.chain_store

    def read(window: Window, ref: SegmentRef) -> Segment:
        assert window.chain is not None
        return chains.read_segment(cluster, window.chain.info.chain, ref, identities)

    return point_at_time(timeline, target.moment, repo.clock.now(), read)


@dataclass(frozen=True)
class PointSnapshot:
    """A raw snapshot file (with etcd's trailer) holding the cluster at ``point.revision``."""

    path: Path
    point: RestorePoint
    events: int
    segments: int
    leases_added: int
    seconds: float


class ChainSurvey:
    """The segments up to a point downloaded, checked and surveyed (the replay's first pass) in
    a thread of its own, while the caller fetches the base: the survey needs no base.

    Segments are staged in ``work``. :meth:`result` waits for the survey and raises what it
    found wrong (a damaged or missing segment is refused, never skipped); :meth:`close` stops
    it at the next segment and removes what it staged. Use it as a context manager.
    """

    def __init__(self, repo: BackupRepository, point: RestorePoint, identities: Sequence[Identity] | None,
                 work: Path, progress: Progress = lambda stage, done: None) -> None:
        self.point = point
        self.work = work
        work.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._found: tuple[ReplayFacts, list[RowRun]] | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._survey, args=(repo, identities, progress),
                                        name="lifeboat-chain-survey", daemon=True)
        self._thread.start()

    def _survey(self, repo: BackupRepository, identities: Sequence[Identity] | None, progress: Progress) -> None:
        point = self.point
        # The first segment names the chain's own base, which may be gone (folded into a synthetic one).
        assert point.window.chain is not None
        try:
            # Closed before the work directory is cleaned, so that no fetch still writes into it.
            with closing(_download(repo, point, identities, self.work, progress, self._stop)) as fetched:
                facts, runs = compile_rows(fetched, point.window.chain.info.base_backup, point.base_revision,
                                           point.revision, self.work)
            if facts.last_revision != point.revision:
                raise IntegrityError(f"the chain's events end at revision {facts.last_revision}, not {point.revision}")
            self._found = facts, runs
        except BaseException as exc:  # handed to the caller by result()
            self._failure = exc

    def result(self) -> tuple[ReplayFacts, list[RowRun]]:
        """The survey's facts and the rows to write; its failure re-raised."""
        self._thread.join()
        if self._failure is not None:
            raise self._failure
        assert self._found is not None
        return self._found

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for leftover in self.work.glob("*"):
            leftover.unlink()
        if self.work.exists():
            self.work.rmdir()

    def __enter__(self) -> ChainSurvey:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_point_snapshot(repo: BackupRepository, point: RestorePoint, identities: Sequence[Identity] | None,
                         dest: Path, *, base_snapshot: Path | None = None,
                         progress: Progress = lambda stage, done: None,
                         survey: ChainSurvey | None = None) -> PointSnapshot:
    """Write ``dest``: the base backup (fetched and verified, or ``base_snapshot`` if already
    fetched) with every captured event up to the point applied. Nothing is applied unless the
    whole chain up to the point downloads and checks. ``seconds`` is on the repository's clock.

    The segments are downloaded and surveyed while the base is fetched (``survey``: one the
    caller started earlier; this call closes it). The events are committed into the fetched
    base itself (no copy of it) when this call fetches it, or when ``base_snapshot`` is
    ``dest``; into a new file otherwise. An interruption leaves ``dest`` at the base's revision
    or complete (:func:`~lifeboat.snapshot.writer.commit_in_place`); at the base's revision it
    no longer has a trailer, so it is neither mistaken for the base nor used before it is
    written again.
    """
    clock = repo.clock
    started = clock.monotonic()
    base = base_snapshot or dest
    if not point.replays:
        if survey is not None:
            survey.close()
        if base_snapshot is None:
            _fetch_base(repo, point, identities, base)
        elif base != dest:
            os.replace(base, dest)
        return PointSnapshot(dest, point, 0, 0, 0, clock.monotonic() - started)
    with survey or ChainSurvey(repo, point, identities, dest.with_name(dest.name + ".segments"), progress) as chain:
        try:
            if base_snapshot is None:
                _fetch_base(repo, point, identities, base)
            facts, runs = chain.result()
            leases = lease_rows(facts, read_lease_ids(base))
            changes = [BucketChanges(b"key", appends=stored_rows(runs)),
                       BucketChanges(b"meta", puts=compaction_marks(point.revision))]
            if leases:
                changes.append(BucketChanges(b"lease", puts=leases))
            if base == dest:
                commit_in_place(dest, changes, append_bytes_hint=facts.row_bytes)
            else:
                # The base was verified as it was fetched (by the caller that passed it).
                write_db(base, dest, changes, trailer=True, append_bytes_hint=facts.row_bytes, source_checked=True)
        except BaseException:
            if base_snapshot is None:
                dest.unlink(missing_ok=True)  # this call's own download, never finished
            raise
    return PointSnapshot(dest, point, facts.events, len(point.segments), len(leases), clock.monotonic() - started)


def _fetch_base(repo: BackupRepository, point: RestorePoint, identities: Sequence[Identity] | None,
                path: Path) -> None:
    report = verify_backup(repo, point.base, identities, tmp_dir=path.parent, keep_snapshot=path)
    failure = report.first_failure()
    if failure is not None or not report.ok:
        path.unlink(missing_ok=True)
        what = f"{failure.name}: {failure.detail}" if failure else "no checks ran"
        raise IntegrityError(f"base backup {point.base.id} failed verification ({what})")


# Segments fetched ahead of the survey: downloading and decrypting (in the store's client and
# pyrage), decompressing and hashing all release the GIL, so they overlap the survey's Python.
FETCH_AHEAD = 3
FETCH_THREADS = 2


def _download(repo: BackupRepository, point: RestorePoint, identities: Sequence[Identity] | None,
              work: Path, progress: Progress, stop: threading.Event) -> Generator[StagedSegment, None, None]:
    """Every segment up to the point, in order, checked and decrypted into ``work`` but kept
    compressed, while the ones after it are being fetched.

    Staged compressed (a seventh or so of the raw size): the second pass decompresses again
    only the segments holding a row to write, which is cheaper than writing and reading back
    the raw bytes. Each segment is decompressed for its check into one of a few reused buffers
    (:class:`~lifeboat.catalog.codec.FrameBuffer`): the header's ``body`` is a view of it, valid
    until the next segment is asked for."""
    chain = point.window.chain
    assert chain is not None
    store = repo.chain_store
    # One buffer for each fetch in flight or done and waiting, and one for the segment the
    # caller holds: a fetch never waits for one.
    buffers: queue.SimpleQueue[FrameBuffer] = queue.SimpleQueue()
    for _ in range(FETCH_AHEAD + 1):
        buffers.put(FrameBuffer())

    def fetch(number: int, ref: SegmentRef) -> tuple[StagedSegment, FrameBuffer]:
        stored = store.fetch_compressed(chain.info.cluster, chain.info.chain, ref, identities)
        buffer = buffers.get_nowait()
        try:
            with segment_named(store.segment_where(chain.info.cluster, chain.info.chain, ref)):
                size = buffer.decompress(stored)
            header = store.check_header(buffer.data, chain.info.cluster, chain.info.chain, ref, size)
        except BaseException:
            buffers.put(buffer)
            raise
        path = work / f"{number:09d}.segment.zst"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(stored)
        return StagedSegment(header, path, compressed=True, raw_size=size), buffer

    refs = iter(enumerate(point.segments))
    with ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="segment-fetch") as pool:
        ahead: deque[Future[tuple[StagedSegment, FrameBuffer]]] = deque(
            pool.submit(fetch, *item) for item in islice(refs, FETCH_AHEAD))
        done = 0
        try:
            while ahead:
                if stop.is_set():
                    raise OperationFailed("the replay was stopped before its segments were surveyed")
                staged, buffer = ahead.popleft().result()
                done += staged.path.stat().st_size
                progress("segments", done)
                following = next(refs, None)
                if following is not None:
                    ahead.append(pool.submit(fetch, *following))
                yield staged
                buffers.put(buffer)  # the caller is done with that segment's body
        finally:
            for future in ahead:
                future.cancel()

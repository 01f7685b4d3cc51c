"""A snapshot of a cluster at any captured revision or time: base backup + replayed segments."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from collections.abc import Callable, Generator, Sequence
from itertools import islice
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from lifeboat.catalog.age_keys import Identity
from lifeboat.catalog.chains import SegmentRef, decompressed
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.segments import Segment
from lifeboat.catalog.timeline import (
    RestorePoint, Timeline, Window, build_timeline, point_at_revision, point_at_time,
)
from lifeboat.errors import IntegrityError, UsageError
from lifeboat.pitr.replay import StagedSegment, compaction_marks, compile_rows, lease_rows, stored_rows
from lifeboat.snapshot.mvcc import read_lease_ids
from lifeboat.snapshot.writer import BucketChanges, write_db
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
    return moment.astimezone(timezone.utc)


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


def build_point_snapshot(repo: BackupRepository, point: RestorePoint, identities: Sequence[Identity] | None,
                         dest: Path, *, base_snapshot: Path | None = None,
                         progress: Progress = lambda stage, done: None) -> PointSnapshot:
    """Write ``dest``: the base backup (fetched and verified, or ``base_snapshot`` if already
    fetched) with every captured event up to the point applied. Nothing is applied unless the
    whole chain up to the point downloads and checks. ``seconds`` is on the repository's clock."""
    clock = repo.clock
    started = clock.monotonic()
    work = dest.with_name(dest.name + ".segments")
    work.mkdir(mode=0o700, parents=True, exist_ok=True)
    base = base_snapshot or dest.with_name(dest.name + ".base")
    try:
        if base_snapshot is None:
            _fetch_base(repo, point, identities, base)
        if not point.replays:
            if base != dest:
                os.replace(base, dest)
            return PointSnapshot(dest, point, 0, 0, 0, clock.monotonic() - started)
        # The first segment names the chain's own base, which may be gone (folded into a synthetic one).
        assert point.window.chain is not None
        # Closed before the work directory is cleaned, so that no fetch still writes into it.
        with closing(_download(repo, point, identities, work, progress)) as fetched:
            facts, runs = compile_rows(fetched, point.window.chain.info.base_backup, point.base_revision,
                                       point.revision, work)
        if facts.last_revision != point.revision:
            raise IntegrityError(f"the chain's events end at revision {facts.last_revision}, not {point.revision}")
        leases = lease_rows(facts, read_lease_ids(base))
        changes = [BucketChanges(b"key", appends=stored_rows(runs)),
                   BucketChanges(b"meta", puts=compaction_marks(point.revision))]
        if leases:
            changes.append(BucketChanges(b"lease", puts=leases))
        # The base was verified as it was fetched (here, or by the caller that passed it).
        write_db(base, dest, changes, trailer=True, append_bytes_hint=facts.row_bytes, source_checked=True)
        return PointSnapshot(dest, point, facts.events, len(point.segments), len(leases),
                             clock.monotonic() - started)
    finally:
        for leftover in work.glob("*"):
            leftover.unlink()
        work.rmdir()
        if base_snapshot is None and base != dest:
            base.unlink(missing_ok=True)


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
FETCH_AHEAD = 4
FETCH_THREADS = 2


def _download(repo: BackupRepository, point: RestorePoint, identities: Sequence[Identity] | None,
              work: Path, progress: Progress) -> Generator[StagedSegment, None, None]:
    """Every segment up to the point, in order, checked and decrypted into ``work`` but kept
    compressed, while the ones after it are being fetched.

    Staged compressed (a seventh or so of the raw size): the second pass decompresses again
    only the segments holding a row to write, which is cheaper than writing and reading back
    the raw bytes."""
    chain = point.window.chain
    assert chain is not None
    store = repo.chain_store

    def fetch(number: int, ref: SegmentRef) -> StagedSegment:
        stored = store.fetch_compressed(chain.info.cluster, chain.info.chain, ref, identities)
        header = store.check_header(decompressed(stored), chain.info.cluster, chain.info.chain, ref)
        path = work / f"{number:09d}.segment.zst"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(stored)
        return StagedSegment(header, path, compressed=True)

    refs = iter(enumerate(point.segments))
    with ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="segment-fetch") as pool:
        ahead: deque[Future[StagedSegment]] = deque(pool.submit(fetch, *item) for item in islice(refs, FETCH_AHEAD))
        done = 0
        try:
            while ahead:
                staged = ahead.popleft().result()
                done += staged.path.stat().st_size
                progress("segments", done)
                following = next(refs, None)
                if following is not None:
                    ahead.append(pool.submit(fetch, *following))
                yield staged
        finally:
            for future in ahead:
                future.cancel()

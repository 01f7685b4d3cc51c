"""Packing a chain's small closed segments into fewer, larger ones, after capture wrote them.

Capture closes a segment every flush interval while anything changes, so a quiet cluster
leaves up to 86,400 small segments a day: a point restore fetches and checks each one, and
every command that reads a cluster's chains lists each one. A *pack* is an ordinary segment
(same format, same name pattern) holding every revision of a run of consecutive segments, with
the first one's predecessor, each revision's seen time and every lease TTL they recorded. It
is committed create-only like any segment, so it exists only once complete; the timeline then
takes it in place of the segments it holds (:func:`lifeboat.catalog.timeline.build_timeline`
prefers, of segments starting at one revision, the one reaching furthest).

The segments a pack holds are not deleted when it is written: a restore that listed the chain
a moment before still fetches them. A later pass deletes them once the pack has been in the
repository for ``delete_after``, and only after reading the pack back and checking it whole.
An interrupted pass leaves at worst a pack beside the segments it holds (both valid; the next
pass goes on). Left alone: a chain's newest segment (capture resumes after it), segments
closed less than ``min_age`` ago, segments of the old JSON-lines format, and segments already
``small_bytes`` or larger.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from lifeboat.catalog.age_keys import Identity, Recipient, load_recipients
from lifeboat.catalog.chains import ChainListing, ChainStore, SegmentRef, named, reach_first, segment_name
from lifeboat.catalog.segments import (
    SEGMENT_VERSION, Segment, SegmentHeader, check_consecutive, check_indexed_records, encode_segment_frames,
    header_segment, joined_frames,
)
from lifeboat.catalog.streams import mapped_ahead
from lifeboat.config import LifeboatConfig
from lifeboat.errors import AlreadyExists, IntegrityError, OperationFailed, UsageError

T = TypeVar("T")

PACK_BYTES = 4 << 20  # the stored bytes of a run, at most (fetched a few segments at a time)
# The records one pack holds, at most (raw): a point restore holds three segments' records at
# once (packs of 15 MB of records cost its process 45 MB more than this in the benchmark).
PACK_RECORDS_BYTES = 4 << 20
SMALL_BYTES = 1 << 20  # a segment this large as stored is left as it is
MIN_AGE = timedelta(minutes=5)
DELETE_AFTER = timedelta(minutes=30)
THREADS = 8  # segments fetched at once (each is one request)
DELETE_BATCH = 1000  # segments deleted in one call (one request on S3), between looks at ``stop``


@dataclass(frozen=True)
class PackPlan:
    """What one pass does to one chain: the runs to pack, and the segments packs hold already."""

    listing: ChainListing
    runs: tuple[tuple[SegmentRef, ...], ...]
    # Each segment to delete, with the pack that holds it (read back and checked first).
    held: tuple[tuple[SegmentRef, SegmentRef], ...]
    waiting: int = 0  # segments a pack holds that stay until the pack is ``delete_after`` old


def _holders(refs: Sequence[SegmentRef]) -> list[tuple[SegmentRef, SegmentRef | None]]:
    """Each segment with one holding every revision of it and more (None when none does)."""
    found: list[tuple[SegmentRef, SegmentRef | None]] = []
    reach: SegmentRef | None = None  # of the segments so far, the one reaching furthest
    for ref in sorted(refs, key=reach_first):
        if reach is not None and reach.last_revision >= ref.last_revision \
                and (reach.first_revision, reach.last_revision) != (ref.first_revision, ref.last_revision):
            found.append((ref, reach))
            continue
        found.append((ref, None))
        if reach is None or ref.last_revision > reach.last_revision:
            reach = ref
    return found


def plan_chain(listing: ChainListing, now: datetime, *, min_age: timedelta = MIN_AGE,
               delete_after: timedelta = DELETE_AFTER, pack_bytes: int = PACK_BYTES,
               small_bytes: int = SMALL_BYTES) -> PackPlan:
    """Pure: the runs of ``listing`` to pack at ``now``, and the held segments to delete."""
    refs = listing.segments
    held: list[tuple[SegmentRef, SegmentRef]] = []
    free: list[SegmentRef] = []
    waiting = 0
    for ref, holder in _holders(refs):
        if holder is None:
            free.append(ref)
        elif holder.modified is not None and holder.modified <= now - delete_after:
            held.append((ref, holder))
        else:
            waiting += 1
    newest = max(refs, key=lambda r: r.last_revision, default=None)
    stretches: list[list[SegmentRef]] = []  # packable segments that follow each other
    stretch: list[SegmentRef] = []
    for ref in sorted(free):
        packable = ref is not newest and ".seg.zst" in ref.name and ref.size < small_bytes \
            and ref.last_seen <= now - min_age
        if stretch and not (packable and ref.first_revision == stretch[-1].last_revision + 1
                            and ref.encrypted == stretch[-1].encrypted):
            stretches.append(stretch)
            stretch = []
        if packable:
            stretch.append(ref)
    stretches.append(stretch)
    runs = (tuple(run) for each in stretches for run in filled(each, lambda r: r.size, pack_bytes))
    return PackPlan(listing, tuple(run for run in runs if len(run) > 1), tuple(held), waiting)


def merged(segments: Sequence[Segment]) -> Segment:
    """One segment holding every revision of ``segments``: consecutive segments of one chain
    (:func:`~lifeboat.catalog.segments.check_consecutive`, checked on their headers).

    Its predecessor is the first one's; lease TTLs are merged as a restore's survey merges
    them, a later segment's over an earlier one's.
    """
    leases: dict[int, int] = {}
    for segment in segments:
        leases.update(segment.leases)
    first = segments[0]
    return Segment(first.cluster, first.chain, first.previous,
                   tuple(r for segment in segments for r in segment.revisions), leases)


@dataclass
class PackResult:
    """What one pass did to a cluster's chains."""

    packs: int = 0  # packs written
    packed: int = 0  # segments they hold
    deleted: int = 0  # segments deleted because a checked pack holds them
    waiting: int = 0  # segments a pack holds, kept until the pack is old enough
    refused: list[str] = field(default_factory=list)  # why a run was not packed or a segment not deleted


@dataclass(frozen=True)
class Packer:
    """Packs the chains of one cluster (see the module's docstring)."""

    chains: ChainStore
    identities: Sequence[Identity] | None
    recipients: Sequence[Recipient]
    zstd_level: int
    min_age: timedelta = MIN_AGE
    delete_after: timedelta = DELETE_AFTER
    pack_bytes: int = PACK_BYTES
    pack_records_bytes: int = PACK_RECORDS_BYTES

    @classmethod
    def for_config(cls, config: LifeboatConfig, chains: ChainStore, identities: Sequence[Identity] | None, *,
                   min_age: float | None = None, delete_after: float | None = None) -> Packer:
        """A packer with the config's recipients, zstd level and waits (``min_age`` and
        ``delete_after`` in seconds, when given, over the config's); shared by ``lifeboat pack``
        and the agent."""
        waits = config.capture
        return cls(chains, identities, load_recipients(list(config.encryption.recipients)), config.backup.zstd_level,
                   min_age=timedelta(seconds=waits.pack_min_age if min_age is None else min_age),
                   delete_after=timedelta(seconds=waits.pack_delete_after if delete_after is None else delete_after))

    def plan(self, cluster: str, now: datetime) -> list[PackPlan]:
        return [plan_chain(listing, now, min_age=self.min_age, delete_after=self.delete_after,
                           pack_bytes=self.pack_bytes, small_bytes=min(SMALL_BYTES, self.pack_bytes))
                for listing in self.chains.chains(cluster)]

    def run(self, cluster: str, now: datetime, stop: threading.Event | None = None) -> PackResult:
        """One pass: delete what old packs hold, then pack what is small. Once ``stop`` is set
        it ends after the pack or deletion under way (what it leaves is whole)."""
        result = PackResult()
        halted = stop.is_set if stop is not None else lambda: False
        with ThreadPoolExecutor(THREADS, thread_name_prefix="pack") as pool:
            for plan in self.plan(cluster, now):
                result.waiting += plan.waiting
                self._delete_held(plan, result, halted)
                for run in plan.runs:
                    if halted():
                        return result
                    self._pack(plan.listing, run, result, pool)
        return result

    def _delete_held(self, plan: PackPlan, result: PackResult,
                     halted: Callable[[], bool]) -> None:
        cluster, chain = plan.listing.info.cluster, plan.listing.info.chain
        checked: dict[str, bool] = {}
        for _, holder in plan.held:
            if holder.name not in checked and not halted():
                checked[holder.name] = self._check(cluster, chain, holder, result)
        gone = [ref for ref, holder in plan.held if checked.get(holder.name)]
        # In any order: each one's revisions are in a checked pack. A batch a request where the
        # store deletes many at once (S3).
        for start in range(0, len(gone), DELETE_BATCH):
            if halted():
                return
            batch = gone[start:start + DELETE_BATCH]
            self.chains.delete_segments(cluster, chain, batch)
            result.deleted += len(batch)

    def _check(self, cluster: str, chain: str, pack: SegmentRef, result: PackResult) -> bool:
        """Whether ``pack`` reads back whole (else what it holds stays, and the refusal is noted):
        its sha256, its name, and its index against its records (a segment of an older format,
        which has no index, is decoded whole)."""
        try:
            raw = self.chains.fetch_segment(cluster, chain, pack, self.identities)
            header = self.chains.check_header(raw, cluster, chain, pack)
            if header.version == SEGMENT_VERSION:
                check_indexed_records(header, self.chains.segment_where(cluster, chain, pack))
            else:
                self.chains.check_segment(raw, cluster, chain, pack)
        except (OperationFailed, UsageError) as exc:
            result.refused.append(f"segments held by {pack.name} are kept: {exc}")
            return False
        return True

    def _pack(self, listing: ChainListing, run: Sequence[SegmentRef], result: PackResult,
              pool: ThreadPoolExecutor) -> None:
        cluster, chain = listing.info.cluster, listing.info.chain
        if run[0].encrypted and not self.recipients:
            result.refused.append(f"{len(run)} encrypted segments of chain {chain} are not packed: "
                                  "no recipient to encrypt the pack to (encryption.recipients, --encrypt-to)")
            return

        def fetch(ref: SegmentRef) -> SegmentHeader:
            return self.chains.check_header(self.chains.fetch_segment(cluster, chain, ref, self.identities),
                                            cluster, chain, ref)

        # Packs are written as their records fill up, while the next few segments are fetched:
        # a run is capped by its stored size, and segments of values that compress well hold
        # many times that.
        headers = mapped_ahead(pool, fetch, run, THREADS)
        try:
            for group in filled(zip(run, headers), lambda pair: len(pair[1].body), self.pack_records_bytes):
                if len(group) > 1:
                    self._commit(cluster, chain, [ref for ref, _ in group], [header for _, header in group])
                    result.packs += 1
                    result.packed += len(group)
        except (OperationFailed, UsageError) as exc:
            result.refused.append(f"{len(run)} segments of chain {chain} from revision {run[0].first_revision} "
                                  f"are not packed: {exc}")
        finally:
            headers.close()  # after a failure, the fetches not yet started are not made

    def _commit(self, cluster: str, chain: str, refs: Sequence[SegmentRef], headers: Sequence[SegmentHeader]) -> None:
        """Write the pack of ``refs`` (their checked ``headers``): its records copied as they are;
        one holding an older format's segment is decoded and encoded again."""
        encrypted = refs[0].encrypted
        frames: tuple[bytes, bytes] | None = None
        try:
            if all(h.version == SEGMENT_VERSION for h in headers):
                frames = joined_frames(headers)  # which checks that they follow each other
            else:
                check_consecutive(headers)
        except ValueError as exc:
            raise IntegrityError(f"capture segments from {self.chains.segment_where(cluster, chain, refs[0])}: "
                                 f"{exc}") from None
        if frames is not None:
            name = named(refs[0].first_revision, refs[-1].last_revision, refs[0].first_seen, refs[-1].last_seen,
                         encrypted)
        else:
            pack = merged([header_segment(h, self.chains.segment_where(cluster, chain, ref))
                           for ref, h in zip(refs, headers, strict=True)])
            name, frames = segment_name(pack, encrypted), encode_segment_frames(pack)
        try:
            self.chains.commit_frames(cluster, chain, name, frames, self.recipients if encrypted else (),
                                      self.zstd_level)
        except AlreadyExists:
            pass  # another pass wrote this very pack


def filled(items: Iterable[T], size: Callable[[T], int], limit: int) -> Iterator[list[T]]:
    """Consecutive groups of ``items`` each adding up to at most ``limit`` by ``size`` (one
    larger alone), in order; each is yielded once the next item would not fit in it, so no more
    than one group and one item are read ahead of what was yielded."""
    group: list[T] = []
    total = 0
    for item in items:
        amount = size(item)
        if group and total + amount > limit:
            yield group
            group, total = [], 0
        group.append(item)
        total += amount
    if group:
        yield group

"""What the chain survey's child process runs (:mod:`lifeboat.pitr.survey`): download, check and
survey a chain's segments, sent a plain request through stdin.

The child imports only this module's needs: no pydantic nor the config's model (with them its
imports took 53 MB, without them 37 MB), hence a request of plain values, not a
:class:`~lifeboat.catalog.timeline.RestorePoint` and its manifests.
``tests/unit/pitr/test_survey.py`` checks that it stays so.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import threading
import traceback
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lifeboat.catalog.age_keys import Identity, identities_from_material
from lifeboat.catalog.chains import ChainStore, SegmentRef, segment_named
from lifeboat.catalog.codec import FrameBuffer, checksummed_frame_end, frame_content_size, frames_decompressed
from lifeboat.catalog.segments import SegmentHeader
from lifeboat.errors import IntegrityError
from lifeboat.pitr.replay import ReplayFacts, RowRun, StagedSegment, compile_rows
from lifeboat.store.base import ObjectStore
from lifeboat.waits import exit_with_parent

Progress = Callable[[str, int], None]

FRAME = struct.Struct(">Q")  # the length of each pickled message the child sends


@dataclass(frozen=True)
class SurveyedChain:
    """The part of a restore point the survey reads: its chain's segments up to the point."""

    cluster: str
    chain: str
    base_backup: str  # the backup the chain's first segment names (it may be gone)
    base_revision: int
    revision: int
    segments: tuple[SegmentRef, ...]
    # Those whose revisions other segments of the chain hold as well: checked whole by the
    # survey, records and all, so that damage is found while the others can be read instead.
    doubled: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SurveyRequest:
    """What the parent sends the child (pickled through its stdin; the store holds credentials)."""

    store: ObjectStore
    chain: SurveyedChain
    identities: tuple[tuple[str, bytes], ...] | None  # each identity's source and what it was read from
    work: Path


def survey_segments(store: ObjectStore, chain: SurveyedChain, identities: Sequence[Identity] | None, work: Path,
                    progress: Progress) -> tuple[ReplayFacts, list[RowRun]]:
    """Download, check and survey every segment of ``chain``, staged in ``work``."""
    # Closed before the work directory is cleaned, so that no fetch still writes into it.
    with closing(_download(ChainStore(store), chain, identities, work, progress)) as fetched:
        facts, runs = compile_rows(fetched, chain.base_backup, chain.base_revision, chain.revision, work)
    if facts.last_revision != chain.revision:
        raise IntegrityError(f"the chain's events end at revision {facts.last_revision}, not {chain.revision}")
    return facts, runs


# Segments fetched ahead of the survey: downloading and decrypting (in the store's client and
# pyrage), decompressing and hashing all release the GIL, so they overlap the survey's Python.
# A quiet cluster's chain is many small segments (capture closes one a second), and each is a
# request whose round trip costs more than its bytes: up to FETCH_AHEAD are in flight, in
# FETCH_THREADS threads, while their stored sizes add up to at most FETCH_AHEAD_BYTES (one is
# always fetched, whatever its size). Measured on a chain of 8,342 segments of 100 revisions
# from SeaweedFS with 20 ms added to each request: see docs/benchmarks.md.
FETCH_THREADS = 16
FETCH_AHEAD = 32
FETCH_AHEAD_BYTES = 16 << 20
# A segment's first frame (a version 3 segment's header and index) is a few hundred KiB at most
# in a chain of Kubernetes-like writes; a buffer grown past LARGE_BUFFER for a larger frame is
# kept for the next fetch only while fewer than KEEP_LARGE_BUFFERS such are free.
FIRST_BUFFER = 256 << 10
LARGE_BUFFER = 4 << 20
KEEP_LARGE_BUFFERS = 2


class _Buffers:
    """The fetches' free :class:`FrameBuffer`s, the most recently freed taken first: a new one
    only when none is free, so there are at most as many as segments in flight, plus the one
    the survey holds."""

    def __init__(self) -> None:
        self._free: list[FrameBuffer] = []
        self._lock = threading.Lock()

    def take(self) -> FrameBuffer:
        with self._lock:
            return self._free.pop() if self._free else FrameBuffer(FIRST_BUFFER)

    def give(self, buffer: FrameBuffer) -> None:
        with self._lock:
            if len(buffer.data) > LARGE_BUFFER and \
                    sum(len(free.data) > LARGE_BUFFER for free in self._free) >= KEEP_LARGE_BUFFERS:
                return  # let it go: a run of large segments does not leave every buffer large
            self._free.append(buffer)


def _download(store: ChainStore, chain: SurveyedChain, identities: Sequence[Identity] | None,
              work: Path, progress: Progress) -> Generator[StagedSegment, None, None]:
    """Every segment up to the point, in order, checked and decrypted into ``work`` but kept
    compressed, while the ones after it are being fetched.

    Staged compressed (a seventh or so of the raw size): the second pass decompresses again
    only the segments holding a row to write, which is cheaper than writing and reading back
    the raw bytes. Each segment is decompressed for its check into one of the reused buffers
    (:class:`~lifeboat.catalog.codec.FrameBuffer`): the header's ``body`` is a view of it, valid
    until the next segment is asked for."""
    buffers = _Buffers()

    def fetch(number: int, ref: SegmentRef) -> tuple[StagedSegment, FrameBuffer, int]:
        stored = store.fetch_compressed(chain.cluster, chain.chain, ref, identities)
        buffer = buffers.take()
        where = store.segment_where(chain.cluster, chain.chain, ref)

        def read(raw: bytearray, size: int, *, check_sha256: bool, index_frame: bool) -> SegmentHeader:
            return store.check_header(raw, chain.cluster, chain.chain, ref, size, check_sha256=check_sha256,
                                      index_frame=index_frame)

        try:
            with segment_named(where, ref):
                staged = checked_segment(stored, buffer, work / f"{number:09d}.segment.zst", read, where,
                                         whole=ref.name in chain.doubled)
        except BaseException:
            buffers.give(buffer)
            raise
        fd = os.open(staged.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(stored)
        return staged, buffer, len(stored)

    refs = deque(enumerate(chain.segments))
    # Each fetch in flight (or done, not yet taken) with its segment's stored size as listed.
    ahead: deque[tuple[Future[tuple[StagedSegment, FrameBuffer, int]], int]] = deque()
    with ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="segment-fetch") as pool:

        def fetch_more() -> None:
            while refs and len(ahead) < FETCH_AHEAD and \
                    (not ahead or sum(size for _, size in ahead) + refs[0][1].size <= FETCH_AHEAD_BYTES):
                number, ref = refs.popleft()
                ahead.append((pool.submit(fetch, number, ref), ref.size))

        fetch_more()
        done = 0
        try:
            while ahead:
                # The size from the fetch: a stat here gives up the interpreter lock, and getting
                # it back from the fetch threads took 1.6 ms a segment (0.67 s for 418).
                staged, buffer, staged_size = ahead.popleft()[0].result()
                done += staged_size
                progress("segments", done)
                fetch_more()
                yield staged
                buffers.give(buffer)  # the caller is done with that segment's body
        finally:
            for future, _ in ahead:
                future.cancel()


class HeaderReader(Protocol):
    """Checks and parses a segment's header as :meth:`ChainStore.check_header` does."""

    def __call__(self, raw: bytearray, size: int, *, check_sha256: bool, index_frame: bool) -> SegmentHeader: ...


def checked_segment(stored: bytes, buffer: FrameBuffer, path: Path, read: HeaderReader, where: str, *,
                    whole: bool = False) -> StagedSegment:
    """A downloaded segment's header, checked, and where its records are once it is at ``path``.

    The first zstd frame is decompressed into ``buffer``: of a version 3 segment, the header and
    the index, and nothing more. When that frame is whole and has a content checksum, zstd
    compares it with what it decompresses to, and hashing that again with sha256 would find no
    other damage; otherwise the whole segment is decompressed and its sha256 checked. The
    records frame's checksum is compared when the replay decompresses it to write rows; with
    ``whole``, here as well (into bytes let go at once)."""
    first_end = checksummed_frame_end(stored)
    # No `with memoryview(...)`: a read that fails still holds a slice of the view, and
    # releasing it then raised BufferError over the IntegrityError (the views go with ``stored``).
    size = buffer.decompress(stored if first_end is None else memoryview(stored)[:first_end])
    header = read(buffer.data, size, check_sha256=first_end != len(stored), index_frame=first_end is not None)
    if not header.records_apart:
        return StagedSegment(header, path, compressed=True, raw_size=size)
    assert first_end is not None
    raw_size = _records_frame_size(stored, first_end, where)
    if whole:
        frames_decompressed(memoryview(stored)[first_end:])
    return StagedSegment(header, path, compressed=True, raw_size=raw_size, records_at=first_end)


def _records_frame_size(stored: bytes, start: int, where: str) -> int:
    """The raw size of a version 3 segment's records frame, which must be one whole zstd frame
    with a content checksum to the end of ``stored``: the replay, which decompresses it, then
    always reaches the checksum. The survey itself reads only the index frame before it."""
    if checksummed_frame_end(stored, start) != len(stored):
        raise IntegrityError(f"capture segment {where} is damaged: its records are not one whole zstd frame "
                             "with a checksum (cut short, or bytes after it)")
    return max(frame_content_size(stored, start), 0)


def _portable(exc: BaseException) -> BaseException:
    """``exc``, or a stand-in with its type and message when it does not survive pickling."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
    return exc


# How much ahead of the base's fetch (and of other processes) the survey runs for the cores,
# in nice steps: the survey, not the fetch, is what the replay waits for. Measured at load 3-4:
# the replay step waited 1.1-2.1 s for it (lifeboat's own process idle meanwhile), 0.1 s with it.
SURVEY_PRECEDENCE = 5


def _take_precedence() -> None:
    """Run ahead of the base's fetch for the two cores, where the system lets this process
    (root, or CAP_SYS_NICE); unchanged otherwise. Linux keeps a nice value per thread, and a
    thread inherits its creator's: this runs before the survey starts any."""
    try:
        os.nice(-SURVEY_PRECEDENCE)
    except OSError:  # not permitted: the survey runs at the parent's priority, as before
        pass


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _take_precedence()
    # Answers go through a private copy of stdout; anything else printed lands on stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    lock = threading.Lock()

    def send(*message: object) -> None:
        body = pickle.dumps(message)
        with lock:
            answers.write(FRAME.pack(len(body)) + body)
            answers.flush()

    with os.fdopen(os.dup(0), "rb") as requests:
        request: SurveyRequest = pickle.load(requests)
    threading.Thread(target=exit_with_parent, args=(0,), name="parent-watch", daemon=True).start()
    try:
        identities = None if request.identities is None else identities_from_material(request.identities)
        found = survey_segments(request.store, request.chain, identities, request.work,
                                lambda stage, done: send("progress", stage, done))
    except BaseException as exc:  # every failure goes to the parent, which raises it
        send("error", _portable(exc), traceback.format_exc())
    else:
        send("result", *found)
    answers.close()


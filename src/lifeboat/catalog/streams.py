"""Streaming building blocks: bounded hand-off between threads, and hashing.

Backups are pipelines of chunk iterators (etcd stream → spool + sha256 → zstd → age →
upload). :func:`threaded` runs the upstream part of a pipeline in its own thread so that
stages overlap; zstd, sha256, age and file I/O release the GIL, so on two cores the stages
really run side by side. Memory stays bounded by the queue depth × chunk size.
"""

from __future__ import annotations

import hashlib
import os
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Final, Generic, TypeVar, cast

from lifeboat.errors import IntegrityError
from lifeboat.snapshot.trailer import TRAILER_SIZE, has_trailer_length

_EOF: Final = object()
T = TypeVar("T")
# A piece of a stream: bytes, or a view of a buffer a store or a decoder handed over uncopied.
Chunk = bytes | memoryview
C = TypeVar("C", bound=Chunk)


class Cancelled(Exception):
    """The consumer of a pipe went away; the producer should stop."""


# The pipe the current thread's stage (see :func:`produced`) puts its output into.
_stage = threading.local()


class Pipe(Generic[T]):
    """A bounded queue of chunks from one producer thread to one consumer.

    A consumer that is itself a stage of :func:`produced`, waiting here for its input, stops
    (raises :class:`Cancelled`) once its own output was abandoned: so an abandoned pipeline
    unwinds from its last stage back to its first, whose read :func:`threaded` interrupts.
    """

    def __init__(self, depth: int = 4) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._cancelled = threading.Event()

    def put(self, chunk: T) -> None:
        self._put(chunk)

    def close(self) -> None:
        self._put(_EOF)

    def fail(self, exc: BaseException) -> None:
        self._put(exc)

    def _put(self, item: object) -> None:
        while True:
            if self._cancelled.is_set():
                raise Cancelled()
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._get()
            if item is _EOF:
                return
            if isinstance(item, BaseException):
                raise item
            yield cast(T, item)  # put() put it

    def _get(self) -> object:
        # Waits are timed, also for a consumer that is no stage (the main thread): a signal the
        # kernel hands to another thread (SIGTERM) does not wake an untimed wait, so the main
        # thread's handler would run only when the next chunk came, never if the producer is
        # stuck on a stalled etcd. Between timed waits it runs within 0.1 s.
        output: Pipe[object] | None = getattr(_stage, "output", None)
        while True:
            if output is not None and output.cancelled:
                raise Cancelled()
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                continue


def produced(produce: Callable[[Pipe[T]], None], name: str, depth: int = 4,
             interrupt: Callable[[], None] | None = None) -> Iterator[T]:
    """Run ``produce(pipe)`` in a background thread and yield what it puts into the pipe.

    ``produce`` puts chunks and returns; the pipe is closed for it. Its exception is
    re-raised here. When this generator is closed early, the pipe is cancelled, so the
    producer's next ``put`` raises :class:`Cancelled` and the thread ends (one waiting for
    its own input in a :class:`Pipe` notices within 0.1 s); ``interrupt``, if given, is
    called too, to end a read the producer may be waiting in.
    """
    pipe: Pipe[T] = Pipe(depth)

    def run() -> None:
        _stage.output = pipe
        try:
            produce(pipe)
            pipe.close()
        except Cancelled:
            pass
        except BaseException as exc:  # handed to the consumer, which re-raises it
            try:
                pipe.fail(exc)
            except Cancelled:
                pass

    worker = threading.Thread(target=run, name=f"lifeboat-{name}", daemon=True)
    worker.start()
    try:
        yield from pipe
    finally:
        pipe.cancel()
        if interrupt is not None and worker.is_alive():
            interrupt()
        # The producer notices the cancel at its next put; one stuck in a read that cannot
        # be interrupted is a daemon thread and must not hold the caller hostage. A garbage
        # collection running on the producer's own thread may close this generator there:
        # that thread ends by itself once it returns. Nor is it waited for when this generator
        # is closed as the interpreter exits (a stream left to the last collection, as a
        # SIGTERM's exception leaves it on Python 3.13): daemon threads no longer run then.
        if threading.current_thread() is not worker and not sys.is_finalizing():
            worker.join(timeout=10)


def threaded(chunks: Iterable[T], name: str, depth: int = 4) -> Iterator[T]:
    """Iterate ``chunks`` in a background thread, yielding its chunks here.

    An exception upstream is re-raised here; when this generator is closed early, the
    upstream iterator is closed too (so a gRPC stream or a file is released), and one with a
    ``cancel()`` method (an etcd snapshot stream) is cancelled at once, so that a read
    waiting on a stalled server does not keep the caller waiting.
    """

    def produce(pipe: Pipe[T]) -> None:
        iterator = iter(chunks)
        try:
            for chunk in iterator:
                pipe.put(chunk)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    return produced(produce, name, depth, getattr(chunks, "cancel", None))


class Digest:
    """Running sha256 and byte count of what passed through :func:`hashing`."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.size = 0

    def update(self, chunk: Chunk) -> None:
        self._sha.update(chunk)
        self.size += len(chunk)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class SnapshotDigest(Digest):
    """sha256 of an etcd snapshot stream and of its db (all but the last 32 bytes), in one pass.

    etcd appends sha256(db) to the snapshot stream (its maintenance Snapshot RPC); the size
    rule and the trailer's length are :mod:`lifeboat.snapshot.trailer`'s, the same ones a
    saved file is checked with. ``verify_trailer`` checks both.
    """

    def __init__(self) -> None:
        super().__init__()
        self._db = hashlib.sha256()
        self._tail = b""
        self._whole: str | None = None

    def update(self, chunk: Chunk) -> None:
        self.size += len(chunk)
        if len(chunk) >= TRAILER_SIZE:
            self._db.update(self._tail)
            self._db.update(memoryview(chunk)[:-TRAILER_SIZE])
            self._tail = bytes(chunk[-TRAILER_SIZE:])  # a copy: a view's buffer is reused
        else:
            data = self._tail + chunk
            self._db.update(data[:-TRAILER_SIZE])
            self._tail = data[-TRAILER_SIZE:]

    def verify_trailer(self) -> str:
        """Check etcd's trailer; returns the db sha256 (hex). Raises IntegrityError."""
        if not has_trailer_length(self.size):
            raise IntegrityError(
                f"etcd's snapshot stream ended after {self.size} bytes, which is not a db plus "
                "its sha256 trailer; the transfer was cut short"
            )
        db = self._db.digest()
        if db != self._tail:
            raise IntegrityError("etcd's snapshot failed its sha256 check: the stream was corrupted")
        whole = self._db.copy()
        whole.update(self._tail)
        self._whole = whole.hexdigest()
        return db.hex()

    def hexdigest(self) -> str:
        if self._whole is None:
            raise IntegrityError("snapshot digest read before the stream was verified")
        return self._whole



def private_file(path: Path) -> BinaryIO:
    """Open ``path`` for writing, truncated and owner-only (0600) whatever the umask.

    Snapshots and control-plane archives hold every Secret of the cluster. The mode is set on
    the open file too, since ``O_CREAT``'s mode does not apply to a file that already exists.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb")


def hashing(chunks: Iterable[C], digest: Digest) -> Iterator[C]:
    """Pass ``chunks`` through unchanged, feeding each into ``digest``."""
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


class PieceBuffers:
    """A few buffers that a stream is copied into in pieces of one size, each given back once used.

    Every stage of a pipeline (hashing, spooling, zstd, each hand-off between threads) costs
    per piece as well as per byte; etcd streams a snapshot in 32 KiB messages, so a gigabyte
    arrives as 30,000 pieces, joined here into pieces of ``size`` bytes. Joined into fresh
    buffers, each piece was a fresh mapping (see :mod:`lifeboat.cli.malloc`) whose every page
    faulted when written: 1.2 s of a backup's CPU per 1.2 GB. A producer takes buffers
    (:meth:`pieces`, blocking while all ``count`` are out); whoever uses the pieces last gives
    each back when it asks for the next (:meth:`returned`), in whatever thread that is.
    """

    def __init__(self, size: int, count: int) -> None:
        self.size = size
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(count):
            self._free.put(bytearray(size))
        self._closed = threading.Event()

    def pieces(self, chunks: Iterable[Chunk]) -> Iterator[memoryview]:
        """``chunks`` copied into pieces of ``size`` bytes (the last may be shorter), as views.

        Each view is of a buffer taken from here: valid until it is given back.
        """
        size = self.size
        buffer, filled = self._take(), 0
        for chunk in chunks:
            with memoryview(chunk) as view:
                start, left = 0, len(view)
                while left:
                    n = min(left, size - filled)
                    buffer[filled : filled + n] = view[start : start + n]
                    filled, start, left = filled + n, start + n, left - n
                    if filled == size:
                        yield memoryview(buffer)
                        buffer, filled = self._take(), 0
        if filled:
            yield memoryview(buffer)[:filled]
        else:
            self._free.put(buffer)

    def returned(self, views: Iterator[memoryview]) -> Iterator[memoryview]:
        """Pass ``views`` on, giving each one's buffer back when the next is asked for.

        The consumer must be done with a piece by then (zstd copies what it keeps). Closing
        this generator wakes a producer waiting for a buffer (it raises :class:`Cancelled`)
        and closes ``views``.
        """
        try:
            for view in views:
                yield view
                self._free.put(view.obj)  # type: ignore[arg-type]  # one of the buffers above
        finally:
            self._closed.set()
            close = getattr(views, "close", None)
            if close is not None:
                close()

    def _take(self) -> bytearray:
        return take_buffer(self._free, self._closed.is_set)


def take_buffer(free: "queue.SimpleQueue[bytearray]", gone: Callable[[], bool]) -> bytearray:
    """A buffer from ``free``, once there is one; raises Cancelled once ``gone()`` (the consumer went away)."""
    while True:
        try:
            return free.get(timeout=0.1)
        except queue.Empty:
            if gone():
                raise Cancelled() from None


def ranged(read: Callable[[int, int], Chunk], size: int, part: int, in_flight: int) -> Iterator[Chunk]:
    """Bytes ``0..size`` read as ranges of ``part`` bytes, ``in_flight`` at once, yielded in order.

    ``read(start, end)`` returns one range. Memory stays near ``in_flight`` × ``part`` (see
    :func:`mapped_ahead`); closing this generator early abandons the reads still running.
    """
    pool = ThreadPoolExecutor(in_flight, thread_name_prefix="lifeboat-range")
    try:
        yield from mapped_ahead(pool, lambda start: read(start, min(start + part, size)), range(0, size, part),
                                in_flight)
    finally:
        pool.shutdown(wait=False)


R = TypeVar("R")


def mapped_ahead(pool: ThreadPoolExecutor, work: Callable[[T], R], items: Iterable[T],
                 ahead: int) -> Generator[R, None, None]:
    """``work(item)`` for each of ``items``, run in ``pool`` and yielded in order, with at most
    ``ahead`` of them running or done but not yet taken: one is started only once the one
    ``ahead`` before it was handed on. A failure is raised here, in order; closing this
    generator early cancels what has not started (what runs finishes, unseen)."""
    source = iter(items)
    pending: deque[Future[R]] = deque()

    def request() -> None:
        for item in source:
            pending.append(pool.submit(work, item))
            return

    try:
        for _ in range(ahead):
            request()
        while pending:
            result = pending.popleft().result()
            request()
            yield result
    finally:
        for future in pending:
            future.cancel()

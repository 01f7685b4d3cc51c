"""The replay's first pass (download, check and survey of a chain's segments) in a child process.

The survey is Python that walks every record of every segment; in a thread it would share the
interpreter lock with the base backup's download, decryption and decompression, which it runs
beside. In a process of its own it runs on the other core.

The child is ``python -m lifeboat.pitr.survey_child``: nothing secret is on its command line. The
request (the store, with its credentials; the point; the age identities) goes through its
stdin pipe, pickled; what it found, or the error it raised, comes back through its stdout pipe.
The child exits when that stdin pipe closes, so a parent that dies, even by SIGKILL, leaves no
survey running. It runs in a process group of its own, so a Ctrl-C at the terminal reaches only
the parent, which decides, and stops it in :meth:`ChainSurvey.close` (as it does on SIGTERM).
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any

import lifeboat
from lifeboat.catalog.age_keys import Identity, identity_material, identities_from_material
from lifeboat.catalog.chains import ChainStore, SegmentRef, segment_named
from lifeboat.catalog.codec import FrameBuffer
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.timeline import RestorePoint
from lifeboat.errors import IntegrityError, LifeboatError, OperationFailed
from lifeboat.pitr.replay import ReplayFacts, RowRun, StagedSegment, compile_rows
from lifeboat.store.base import ObjectStore

Progress = Callable[[str, int], None]

_FRAME = struct.Struct(">Q")  # the length of each pickled message the child sends


@dataclass(frozen=True)
class _Request:
    store: ObjectStore
    point: RestorePoint
    identities: tuple[tuple[str, bytes], ...] | None  # each identity's source and what it was read from
    work: Path


class ChainSurvey:
    """The segments up to a point downloaded, checked and surveyed (the replay's first pass) in
    a child process, while the caller fetches the base: the survey needs no base.

    Segments are staged in ``work``. :meth:`result` waits for the survey and raises what it
    found wrong (a damaged or missing segment is refused, never skipped, and named); :meth:`close`
    stops the child and removes what it staged. Use it as a context manager.
    """

    def __init__(self, repo: BackupRepository, point: RestorePoint, identities: Sequence[Identity] | None,
                 work: Path, progress: Progress = lambda stage, done: None) -> None:
        self.point = point
        self.work = work
        work.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._progress = progress
        self._answer: tuple[str, Any, Any] | None = None
        request = pickle.dumps(_Request(repo.store, point, None if identities is None else
                                        tuple(identity_material(identity) for identity in identities), work))
        root = str(Path(lifeboat.__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH")))))
        self._child = subprocess.Popen([sys.executable, "-m", "lifeboat.pitr.survey_child"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, env=env, process_group=0)
        self._stopped = False
        assert self._child.stdin is not None
        try:
            self._child.stdin.write(request)
            self._child.stdin.flush()
        except BrokenPipeError:
            pass  # the child is gone already: result() says how it ended
        self._reader = threading.Thread(target=self._read, name="lifeboat-chain-survey", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._child.pid

    def _read(self) -> None:
        assert self._child.stdout is not None
        for message in _messages(self._child.stdout):
            if message[0] == "progress":
                self._progress(message[1], message[2])
            else:
                self._answer = message
                return

    def result(self) -> tuple[ReplayFacts, list[RowRun]]:
        """The survey's facts and the rows to write; its failure re-raised."""
        self._reader.join()
        code = self._child.wait()
        answer = self._answer
        if answer is not None and answer[0] == "result":
            facts: ReplayFacts = answer[1]
            runs: list[RowRun] = answer[2]
            return facts, runs
        if answer is not None:
            failure: BaseException = answer[1]
            if not isinstance(failure, LifeboatError) and answer[2]:
                failure.add_note(f"in the chain survey's process:\n{answer[2]}")
            raise failure
        if self._stopped:
            raise OperationFailed("the replay was stopped before its segments were surveyed")
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        raise OperationFailed(f"the survey of the capture segments (process {self._child.pid}) ended without "
                              f"an answer ({how}); nothing was replayed; run the restore again")

    def close(self) -> None:
        if self._child.poll() is None:
            self._stopped = True
            self._child.terminate()
        self._child.wait()
        self._reader.join()
        for pipe in (self._child.stdin, self._child.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass
        for leftover in self.work.glob("*"):
            leftover.unlink()
        if self.work.exists():
            self.work.rmdir()

    def __enter__(self) -> ChainSurvey:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _messages(pipe: IO[bytes]) -> Generator[tuple[Any, ...], None, None]:
    while True:
        head = pipe.read(_FRAME.size)
        if len(head) < _FRAME.size:
            return
        (size,) = _FRAME.unpack(head)
        body = pipe.read(size)
        if len(body) < size:
            return
        yield pickle.loads(body)


def survey_chain(store: ObjectStore, point: RestorePoint, identities: Sequence[Identity] | None, work: Path,
                 progress: Progress) -> tuple[ReplayFacts, list[RowRun]]:
    """Download, check and survey every segment up to the point, staged in ``work``."""
    # The first segment names the chain's own base, which may be gone (folded into a synthetic one).
    assert point.window.chain is not None
    # Closed before the work directory is cleaned, so that no fetch still writes into it.
    with closing(_download(ChainStore(store), point, identities, work, progress)) as fetched:
        facts, runs = compile_rows(fetched, point.window.chain.info.base_backup, point.base_revision,
                                   point.revision, work)
    if facts.last_revision != point.revision:
        raise IntegrityError(f"the chain's events end at revision {facts.last_revision}, not {point.revision}")
    return facts, runs


# Segments fetched ahead of the survey: downloading and decrypting (in the store's client and
# pyrage), decompressing and hashing all release the GIL, so they overlap the survey's Python.
FETCH_AHEAD = 3
FETCH_THREADS = 2


def _download(store: ChainStore, point: RestorePoint, identities: Sequence[Identity] | None,
              work: Path, progress: Progress) -> Generator[StagedSegment, None, None]:
    """Every segment up to the point, in order, checked and decrypted into ``work`` but kept
    compressed, while the ones after it are being fetched.

    Staged compressed (a seventh or so of the raw size): the second pass decompresses again
    only the segments holding a row to write, which is cheaper than writing and reading back
    the raw bytes. Each segment is decompressed for its check into one of a few reused buffers
    (:class:`~lifeboat.catalog.codec.FrameBuffer`): the header's ``body`` is a view of it, valid
    until the next segment is asked for."""
    chain = point.window.chain
    assert chain is not None
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


# -- the child ---------------------------------------------------------------------------------


def _portable(exc: BaseException) -> BaseException:
    """``exc``, or a stand-in with its type and message when it does not survive pickling."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
    return exc


def _leave_with_parent(fd: int) -> None:
    """Exit when the parent closes the request pipe, or dies (the kernel closes it then)."""
    while os.read(fd, 1 << 16):  # the raw pipe: a buffered reader's lock would stall the exit
        pass
    os._exit(1)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Answers go through a private copy of stdout; anything else printed lands on stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    lock = threading.Lock()

    def send(*message: object) -> None:
        body = pickle.dumps(message)
        with lock:
            answers.write(_FRAME.pack(len(body)) + body)
            answers.flush()

    with os.fdopen(os.dup(0), "rb") as requests:
        request: _Request = pickle.load(requests)
    threading.Thread(target=_leave_with_parent, args=(0,), name="parent-watch", daemon=True).start()
    try:
        identities = None if request.identities is None else identities_from_material(request.identities)
        found = survey_chain(request.store, request.point, identities, request.work,
                             lambda stage, done: send("progress", stage, done))
    except BaseException as exc:  # every failure goes to the parent, which raises it
        send("error", _portable(exc), traceback.format_exc())
    else:
        send("result", *found)
    answers.close()


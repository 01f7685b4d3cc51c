"""The replay's first pass (download, check and survey of a chain's segments) in a child process.

The survey is Python that walks every record of every segment; in a thread it would share the
interpreter lock with the base backup's download, decryption and decompression, which it runs
beside. In a process of its own it runs on the other core.

The child is ``python -m lifeboat.pitr.survey_child`` (its code is :mod:`lifeboat.pitr.survey_run`):
nothing secret is on its command line. The request (the store, with its credentials; the chain's
segments up to the point, as plain values; the age identities) goes through its stdin pipe,
pickled; what it found, or the error it raised, comes back through its stdout pipe.
The child exits when that stdin pipe closes, so a parent that dies, even by SIGKILL, leaves no
survey running. It runs in a process group of its own, so a Ctrl-C at the terminal reaches only
the parent, which decides, and stops it in :meth:`ChainSurvey.close` (as it does on SIGTERM).
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import IO, Any

from lifeboat.catalog.age_keys import Identity, identity_material
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.timeline import RestorePoint
from lifeboat.errors import LifeboatError, OperationFailed
from lifeboat.pitr.replay import ReplayFacts, RowRun
from lifeboat.pitr.survey_run import FRAME, Progress, SurveyedChain, SurveyRequest
from lifeboat.waits import joined, lifeboat_child


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
        request = survey_request(repo, point, identities, work)
        self._child = lifeboat_child("lifeboat.pitr.survey_child")
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
        joined(self._reader)  # the child may take long (segments to download): a SIGTERM is still handled
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


def survey_request(repo: BackupRepository, point: RestorePoint, identities: Sequence[Identity] | None,
                   work: Path) -> bytes:
    """What the parent writes to the child's stdin: plain values, so that the child imports no model."""
    material = None if identities is None else tuple(identity_material(identity) for identity in identities)
    return pickle.dumps(SurveyRequest(repo.store, surveyed_chain(point), material, work))


def _messages(pipe: IO[bytes]) -> Generator[tuple[Any, ...], None, None]:
    while True:
        head = pipe.read(FRAME.size)
        if len(head) < FRAME.size:
            return
        (size,) = FRAME.unpack(head)
        body = pipe.read(size)
        if len(body) < size:
            return
        yield pickle.loads(body)


def surveyed_chain(point: RestorePoint) -> SurveyedChain:
    """What the survey reads of ``point``: plain values, no manifest."""
    # The first segment names the chain's own base, which may be gone (folded into a synthetic one).
    assert point.window.chain is not None
    info = point.window.chain.info
    return SurveyedChain(info.cluster, info.chain, info.base_backup, point.base_revision, point.revision,
                         tuple(point.segments), point.doubled)

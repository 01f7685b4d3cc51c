"""The corruption tests' oracle (``etcdutl snapshot status``): asked again only when it could not run."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.integration.snapshot_corpus import ORACLE_ATTEMPTS, _run_status

ANSWER = b'{"hash": 1, "revision": 2, "totalKey": 3, "totalSize": 4}'


class Tool:
    """Plays etcdutl: each call takes the next outcome (a CompletedProcess or an exception)."""

    def __init__(self, *outcomes: subprocess.CompletedProcess[bytes] | BaseException) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self, cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def done(code: int, out: bytes = b"", err: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.CompletedProcess(["etcdutl"], code, out, err)


def test_an_oracle_that_timed_out_or_was_killed_is_asked_again() -> None:
    tool = Tool(subprocess.TimeoutExpired("etcdutl", 60), done(-9), done(0, ANSWER))
    assert _run_status(["etcdutl"], tool) == {"hash": 1, "revision": 2, "totalKey": 3, "totalSize": 4}
    assert tool.calls == 3


@pytest.mark.parametrize("answer", [done(0, ANSWER), done(1, err=b"Error: invalid database"),
                                    done(2, err=b"panic: runtime error")])
def test_an_oracle_that_ran_is_asked_once_whatever_it_said(answer: subprocess.CompletedProcess[bytes]) -> None:
    tool = Tool(answer, done(0, b'{"other": 1}'))
    first = _run_status(["etcdutl"], tool)
    assert tool.calls == 1
    assert first == ({"hash": 1, "revision": 2, "totalKey": 3, "totalSize": 4} if answer.returncode == 0
                     else answer.stderr.decode())


def test_an_oracle_that_never_runs_fails_the_test_saying_so() -> None:
    tool = Tool(*[done(-9)] * ORACLE_ATTEMPTS)
    with pytest.raises(AssertionError, match="could not run .* killed by signal 9"):
        _run_status(["etcdutl"], tool)

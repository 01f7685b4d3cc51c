"""Leave no process behind: a benchmark stopped by Ctrl-C or SIGTERM stops what it started.

The servers a benchmark starts (etcd, SeaweedFS) run in sessions of their own, so a Ctrl-C at
the terminal does not reach them, and Python's default SIGTERM ends the benchmark without
running a ``finally`` block or a ``with`` exit. :func:`on_termination` makes SIGTERM and SIGHUP
raise ``KeyboardInterrupt`` like Ctrl-C, so the code that stops each server runs;
:func:`spawned` starts a command (a lifeboat run, with the ``etcdutl`` it may start) in its own
process group and ends that group if the benchmark stops before the command does.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any


TERMINATING = (signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    for sig in TERMINATING:  # a second one must not cut the clean-up short
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def on_termination() -> None:
    """From now on, SIGTERM and SIGHUP end this process the way Ctrl-C does: cleaning up."""
    for sig in TERMINATING:
        signal.signal(sig, _interrupt)


@contextmanager
def spawned(argv: Sequence[str], **popen: Any) -> Iterator[subprocess.Popen[Any]]:
    """``Popen(argv)`` in a new process group; on leaving, a command still running is ended
    (SIGTERM, then SIGKILL after 5 s), with every process it started."""
    proc: subprocess.Popen[Any] = subprocess.Popen(list(argv), start_new_session=True, **popen)
    try:
        yield proc
    finally:
        if proc.returncode is None and proc.poll() is None:
            _end_group(proc)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def _end_group(proc: subprocess.Popen[Any]) -> None:
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue

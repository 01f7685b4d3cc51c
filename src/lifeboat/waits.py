"""Waits in which the main thread still runs its signal handlers.

CPython runs a Python signal handler only in the main thread, between bytecodes. The kernel
hands a signal sent to the process (systemd's or the kubelet's SIGTERM, a terminal's SIGINT) to
any one of its threads that does not block it; when it picks another thread, a main thread
blocked in an untimed (or long) lock acquire, ``Future.result()``, ``Thread.join()``,
``Event.wait()`` or ``select`` is not woken, and the handler (which unwinds the command, or sets
the stop flag) waits until that wait ends on its own. The waits here are cut into slices of
:data:`TICK` seconds, so a handler runs within one.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

A = TypeVar("A")
T = TypeVar("T")

TICK = 0.1


def finished(future: Future[T]) -> T:
    """``future.result()``, waited for in slices."""
    while True:
        try:
            future.exception(TICK)  # raises TimeoutError only when the future is still running
        except TimeoutError:
            continue
        return future.result()


def joined(thread: threading.Thread) -> None:
    """``thread.join()``, waited for in slices."""
    while thread.is_alive():
        thread.join(TICK)


def event_wait(event: threading.Event, seconds: float) -> bool:
    """``event.wait(seconds)``, waited for in slices: True when the event is set."""
    deadline = time.monotonic() + seconds
    while not event.wait(max(min(TICK, deadline - time.monotonic()), 0.0)):
        if time.monotonic() >= deadline:
            return False
    return True


def condition_wait_for(condition: threading.Condition, predicate: Callable[[], bool],
                       timeout: float | None = None) -> bool:
    """``condition.wait_for(predicate, timeout)`` (``condition`` held), waited for in slices."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not condition.wait_for(predicate, TICK if deadline is None else
                                 max(min(TICK, deadline - time.monotonic()), 0.0)):
        if deadline is not None and time.monotonic() >= deadline:
            return False
    return True


def dying_with_lifeboat() -> list[str]:
    """What a long-running child's command line starts with so that the kernel SIGKILLs it when
    the thread that started it ends, and so with lifeboat's process however that ends (kill -9,
    the OOM killer): util-linux's ``setpriv --pdeathsig KILL --``, which sets Linux's
    parent-death signal and execs the command in its place (same process, same exit code).
    Nothing where there is no setpriv: the child then outlives a killed lifeboat. Start commands
    through :func:`killed_with_lifeboat`, which checks first that they can be run.

    Not a ``preexec_fn``: Python code between fork and exec, in a process with threads, made
    children abort (SIGABRT) or run a signal handler meant for the parent."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def killed_with_lifeboat(argv: Sequence[str]) -> list[str]:
    """``argv`` under :func:`dying_with_lifeboat`; a FileNotFoundError, as ``Popen`` raises for a
    command it cannot run, when ``argv[0]`` is not an executable file (setpriv, which runs it,
    would only exit 127)."""
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(errno.ENOENT, "not an executable file", argv[0])
    return [*dying_with_lifeboat(), *argv]


def run_captured(argv: Sequence[str], timeout: float,
                 env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(argv, env=env, capture_output=True, text=True, errors="replace",
    timeout=timeout)``, its output collected in slices; the process is killed on the timeout
    (TimeoutExpired) or on anything raised meanwhile (a signal handler's exception), as
    ``subprocess.run`` does."""
    deadline = time.monotonic() + timeout
    with subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                          errors="replace") as process:
        try:
            while True:
                try:
                    # Calling it again after its timeout loses no output (subprocess's docs).
                    out, err = process.communicate(timeout=max(min(TICK, deadline - time.monotonic()), 0.0))
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() >= deadline:
                        raise subprocess.TimeoutExpired(list(argv), timeout) from None
        except BaseException:
            process.kill()
            raise
    return subprocess.CompletedProcess(list(argv), process.returncode, out, err)


def mapped(pool: Executor, work: Callable[[A], T], items: Iterable[A]) -> list[T]:
    """``list(pool.map(work, items))``, each result waited for in slices."""
    return [finished(future) for future in [pool.submit(work, item) for item in items]]


# What stops a long-running command cleanly: SIGTERM (a service manager), SIGINT (Ctrl-C) and
# SIGHUP (its terminal closed; a `kill -HUP` reflex). Nothing here gives SIGHUP another meaning.
SERVICE_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@contextmanager
def stop_on_signals(stop: threading.Event,
                    signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Inside the block ``signals`` (SIGTERM and SIGINT) only set ``stop`` (a long-running
    command ends its work and returns); the handlers from before are back after it, so a
    process that ran the command (a test, an embedding program) is stopped by those signals again."""
    handler = lambda signum, frame: stop.set()  # noqa: E731
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def lifeboat_child(module: str, *, pass_fds: Sequence[int] = ()) -> subprocess.Popen[bytes]:
    """``python -m <module>`` of this lifeboat (its package first on the child's PYTHONPATH),
    stdin and stdout piped, for the parent to send its request and read the answer; nothing
    on the command line but the module. In a process group of its own: a Ctrl-C at the
    terminal reaches only the parent, which decides. The child should exit when its stdin
    closes (:func:`exit_with_parent`)."""
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH")))))
    return subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                            process_group=0, pass_fds=pass_fds)


def exit_with_parent(fd: int) -> None:
    """In a child process: exit when the parent closes the pipe ``fd`` reads (its request
    pipe), or dies (the kernel closes it then). Run in a daemon thread."""
    while os.read(fd, 1 << 16):  # the raw pipe: a buffered reader's lock would stall the exit
        pass
    os._exit(1)

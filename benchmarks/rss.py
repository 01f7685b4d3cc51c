"""Run a benchmarked command and measure its memory: the process's own peak and its whole tree's.

A lifeboat command may start others (``etcdutl`` in a restore or a drill, the drilled etcd
member itself); the figure that matters for a node is what all of them hold at once. Every
0.05 s the sampler walks the process tree from ``/proc/PID/task/*/children`` and adds up each
process's ``VmRSS``; the largest sum is the tree's peak. Each process's own peak is exact: its
``VmHWM`` (the kernel's high-water mark of its RSS), read at each sample, so a spike of one
process shorter than the interval is not missed. ``wait4``'s ``ru_maxrss`` is not used: Linux
carries the RSS of the forking process (here the benchmark's Python) into the child's, across
``exec``, so a small command would be reported at the benchmark's size.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.teardown import spawned

INTERVAL = 0.05


@dataclass(frozen=True)
class Measured:
    wall_s: float
    exit_code: int
    own_peak_bytes: int  # the command's own peak RSS (its VmHWM)
    tree_peak_bytes: int  # the largest sum of VmRSS over the command and its descendants, or
    # the largest single process's own peak (VmHWM) if that is larger
    cpu_s: float  # user + system seconds, the command's and its waited-for children's
    output: bytes
    sys_s: float = 0.0  # of cpu_s, the system (kernel) seconds: page faults, page cache, I/O

    @property
    def peak_bytes(self) -> int:
        """The figure to hold against a limit: the larger of the two peaks."""
        return max(self.own_peak_bytes, self.tree_peak_bytes)


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def tree_rss_kib(root: int) -> tuple[int, int]:
    """The sum of ``VmRSS`` over ``root`` and every process below it now, and the largest ``VmHWM``."""
    total, highest, todo, seen = 0, 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _status_kib(pid, "VmRSS")
        highest = max(highest, _status_kib(pid, "VmHWM"))
        todo += _children(pid)
    return total, highest


def run(argv: list[str], env: dict[str, str] | None = None, *, capture: bool = False,
        lines: Callable[[float, bytes], None] | None = None, cpu_at_lines: list[float] | None = None) -> Measured:
    """Run ``argv`` to its end; its wall time, exit code, peaks, CPU and (with ``capture``) output.

    ``lines`` (with ``capture``) is given each line of output as it comes, with the seconds since
    the start. ``cpu_at_lines`` gets the CPU seconds the command had used when each line came
    (:func:`tree_cpu_s`), so the CPU between two progress lines is known.
    """
    started = time.monotonic()
    with spawned(argv, env=env, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                 stderr=subprocess.STDOUT if capture else subprocess.PIPE) as proc:
        return _measure(proc, started, lines or (lambda at, line: None), cpu_at_lines)


def tree_cpu_s(pid: int) -> float:
    """User + system seconds of ``pid`` with its waited-for children, and of its live descendants."""
    total, todo, seen = 0.0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks = sum(int(f) for f in fields[11:13]) + (sum(int(f) for f in fields[13:15]) if current == pid else 0)
        total += ticks / os.sysconf("SC_CLK_TCK")
        todo += _children(current)
    return total


def _measure(proc: subprocess.Popen[bytes], started: float, lines: Callable[[float, bytes], None],
             cpu_at_lines: list[float] | None = None) -> Measured:
    output: list[bytes] = []
    pipe = proc.stdout or proc.stderr

    def read() -> None:
        for line in pipe or ():
            if cpu_at_lines is not None:
                cpu_at_lines.append(tree_cpu_s(proc.pid))
            output.append(line)
            lines(time.monotonic() - started, line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    own_kib = tree_kib = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal own_kib, tree_kib
        while not done.is_set():
            own_kib = max(own_kib, _status_kib(proc.pid, "VmHWM"))
            tree_kib = max(tree_kib, *tree_rss_kib(proc.pid))
            done.wait(INTERVAL)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - started
    done.set()
    sampler.join()
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        wall_s=elapsed, exit_code=proc.returncode,
        own_peak_bytes=own_kib * 1024, tree_peak_bytes=max(tree_kib, own_kib) * 1024,
        cpu_s=usage.ru_utime + usage.ru_stime, output=b"".join(output), sys_s=usage.ru_stime,
    )

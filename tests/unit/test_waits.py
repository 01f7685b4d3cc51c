"""Waits of the main thread still run its signal handlers when the kernel hands the signal to
another thread (SIGTERM to a restore, a capture or the agent): each would otherwise wait 5 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import FrameType

import pytest

from lifeboat.capture.spool import Spool
from lifeboat.capture.upload import Uploader, Waiting
from lifeboat.catalog.chains import ChainStore
from lifeboat.clock import SystemClock
from lifeboat.restore.content import newest_revision
from lifeboat.restore.supervisor import run_command
from lifeboat.snapshot.mvcc import KEY_BUCKET, encode_revision
from lifeboat.snapshot.writer import BucketChanges, commit_in_place
from lifeboat.store.memory import MemoryStore
from lifeboat.waits import condition_wait_for, dying_with_lifeboat, event_wait, finished, joined, mapped, run_captured
from tests.support.signals import Stop, signal_to_another_thread
from tests.unit.snapshot.test_page_scan import build

LATE = 5.0  # when a wait ends on its own if the handler never runs


def stopped_soon(wait: Callable[[], object]) -> None:
    with signal_to_another_thread():
        started = time.monotonic()
        with pytest.raises(Stop):
            wait()
        assert time.monotonic() - started < 2


def late_future() -> Future[str]:
    future: Future[str] = Future()
    timer = threading.Timer(LATE, lambda: future.set_result("late"))
    timer.daemon = True
    timer.start()
    return future


def test_a_future_waited_for_is_left_for_the_handler() -> None:
    stopped_soon(lambda: finished(late_future()))


def test_a_thread_joined_is_left_for_the_handler() -> None:
    thread = threading.Thread(target=time.sleep, args=(LATE,), daemon=True)
    thread.start()
    stopped_soon(lambda: joined(thread))


def test_results_of_a_pool_are_left_for_the_handler() -> None:
    with ThreadPoolExecutor(2) as pool:
        stopped_soon(lambda: mapped(pool, time.sleep, [0.0, LATE]))


def test_an_event_waited_for_is_left_for_the_handler() -> None:
    stopped_soon(lambda: event_wait(threading.Event(), LATE))


def test_a_quiet_process_is_killed_when_the_handler_raises() -> None:
    started = time.monotonic()
    stopped_soon(lambda: run_captured(["sleep", str(LATE)], 60))
    assert time.monotonic() - started < 2  # killed, not waited for


def test_the_helpers_still_return_what_they_waited_for() -> None:
    done: Future[int] = Future()
    done.set_result(7)
    assert finished(done) == 7
    failed: Future[int] = Future()
    failed.set_exception(TimeoutError("the work's own timeout"))
    with pytest.raises(TimeoutError, match="the work's own"):
        finished(failed)
    with ThreadPoolExecutor(2) as pool:
        assert mapped(pool, lambda n: n * 2, [1, 2, 3]) == [2, 4, 6]
    event = threading.Event()
    assert not event_wait(event, 0.25)
    threading.Timer(0.1, event.set).start()
    assert event_wait(event, 5)
    ran = run_captured(["sh", "-c", "echo out; echo err >&2; exit 3"], 10)
    assert (ran.returncode, ran.stdout, ran.stderr) == (3, "out\n", "err\n")
    started = time.monotonic()
    with pytest.raises(Exception, match="timed out after 0.3 seconds"):
        run_captured(["sleep", "10"], 0.3)
    assert time.monotonic() - started < 2


def test_the_agent_and_capture_stop_when_their_handler_ran_in_another_threads_stead() -> None:
    # Their SIGTERM handler only sets the event the loop waits on between cycles.
    stop = threading.Event()

    def set_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    with signal_to_another_thread(set_stop):
        started = time.monotonic()
        assert SystemClock().wait(LATE, stop)
        assert time.monotonic() - started < 2


def test_restore_stops_while_systemctl_stops_a_unit() -> None:
    stopped_soon(lambda: run_command(["sleep", str(LATE)]))


def test_a_condition_waited_for_is_left_for_the_handler() -> None:
    changed = threading.Condition()
    with changed:
        stopped_soon(lambda: condition_wait_for(changed, lambda: False, LATE))
        assert not condition_wait_for(changed, lambda: False, 0.2)
        assert condition_wait_for(changed, lambda: True)


def test_capture_stops_while_it_waits_for_its_segments_to_be_uploaded(tmp_path: Path) -> None:
    # `lifeboat capture` flushes its uploads in its main thread before it resumes; here the
    # upload takes LATE seconds to find out (the fence, run before each upload) that it may not go.
    def slow_refusal() -> bool:
        time.sleep(LATE)
        return False

    uploader = Uploader(ChainStore(MemoryStore()), "c1", Spool(tmp_path / "spool", 1 << 20), max_queued_bytes=1 << 20,
                        retry_interval=1, fence=slow_refusal)
    try:
        uploader.submit(Waiting("chain-1", "000000001.segment", b"events", 7))
        stopped_soon(uploader.flush)
    finally:
        uploader.close()


def test_a_commit_into_a_fetched_snapshot_stops_while_the_snapshot_is_fsynced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The commit fsyncs the fetched snapshot in a thread while it computes the new pages, then
    # waits for that fsync (2-3 s on the benchmark's 1.2 GB base); here it takes LATE seconds.
    snapshot = build(tmp_path / "snapshot.db")
    fsync, slowed = os.fsync, threading.Event()

    def slow_first_fsync(fd: int) -> None:
        if not slowed.is_set():
            slowed.set()
            time.sleep(LATE)
        fsync(fd)

    handled: list[float] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        handled.append(time.monotonic())
        raise Stop()

    monkeypatch.setattr(os, "fsync", slow_first_fsync)
    with signal_to_another_thread(stop):
        started = time.monotonic()
        with pytest.raises(Stop):
            commit_in_place(snapshot, [BucketChanges(KEY_BUCKET, appends=[(encode_revision(9), b"\x0a\x02ap")])])
    assert slowed.is_set() and handled[0] - started < 2  # the fsync itself is still waited for, after
    assert newest_revision(snapshot) == 8  # its meta page still names the old tree


def test_a_command_started_dying_with_lifeboat_dies_when_lifeboat_is_killed() -> None:
    # What the drill's etcd and the restore tool run under: killed with lifeboat, they leave no
    # etcd serving a copy of the cluster on loopback, no tool writing a data dir a resumed
    # restore writes again.
    assert dying_with_lifeboat(), "setpriv (util-linux) is on every machine lifeboat supports"
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; from lifeboat.waits import "
                               "dying_with_lifeboat; subprocess.run([*dying_with_lifeboat(), 'sleep', '60'])"])
    children: list[int] = []
    try:
        deadline = time.monotonic() + 20
        while not (children := [c for c in children_of(parent.pid) if command(c) == b"sleep"]) \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert children, "the command did not start"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert not still_alive(children, 5), "the command outlived lifeboat"
    finally:
        parent.kill()
        for child in filter(alive, children):  # reparented: no longer the parent's
            os.kill(child, signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def command(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return b""


def still_alive(pids: list[int], seconds: float) -> list[int]:
    """Those of ``pids`` still running after up to ``seconds`` of waiting for all to end."""
    deadline = time.monotonic() + seconds
    while any(map(alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return list(filter(alive, pids))


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"

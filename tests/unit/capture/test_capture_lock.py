"""One capture per cluster: the lock in etcd that the agent's capture and ``lifeboat capture``
both take, on the in-memory etcd (leases expire on its clock)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from lifeboat.capture import Capture, CaptureStatus
from lifeboat.capture.lock import CaptureLock, lock_key
from lifeboat.capture.upload import NotLeading
from lifeboat.clock import FakeClock, SystemClock
from lifeboat.errors import EtcdUnavailable
from lifeboat.etcd.memory import Fault, MemoryEtcd
from lifeboat.store.memory import MemoryStore
from tests.unit.capture.test_capture_loop import options_for, resumable, until

TTL = 6


def test_a_second_capture_is_refused_naming_the_holder_and_takes_the_lock_once_it_is_released() -> None:
    clock = FakeClock()
    etcd = MemoryEtcd(clock)
    first = CaptureLock(etcd, "prod", "lifeboat capture on host-a (pid 41)", TTL, clock, keepalive=False)
    second = CaptureLock(etcd, "prod", "agent b", TTL, clock, keepalive=False)
    first.acquire()
    with pytest.raises(NotLeading) as refused:
        second.acquire()
    message = str(refused.value)
    assert "another capture of cluster prod is running: lifeboat capture on host-a (pid 41) (since 2024-05-01" in message
    assert lock_key("prod") in message and "\n" not in message
    with pytest.raises(NotLeading):
        second.hold()  # the fence says the same
    assert CaptureLock(etcd, "staging", "agent c", TTL, clock, keepalive=False).hold(), "one lock per cluster"
    first.release()
    assert etcd.get(lock_key("prod")) is None, "released at once, not after a TTL"
    second.acquire()
    assert second.hold()


def test_the_fence_makes_no_round_trip_while_the_lease_surely_holds_and_renews_when_it_may_not() -> None:
    clock = FakeClock()
    etcd = MemoryEtcd(clock)
    lock = CaptureLock(etcd, "prod", "agent a", TTL, clock, keepalive=False)
    lock.acquire()
    asked = sum(etcd.calls.values())
    clock.advance(TTL / 2)
    assert lock.hold()
    assert sum(etcd.calls.values()) == asked, "no call to etcd while the lease outlives the write"
    clock.advance(TTL * 0.3)  # the lease may run out within a third of its TTL: renew first
    renewals = etcd.calls["lease_keepalive_once"]
    assert lock.hold()
    assert etcd.calls["lease_keepalive_once"] == renewals + 1
    assert lock.lease_until == clock.monotonic() + TTL


def test_a_holder_paused_past_its_lease_finds_another_holds_the_lock_before_it_writes() -> None:
    clock = FakeClock()
    etcd = MemoryEtcd(clock)
    paused = CaptureLock(etcd, "prod", "lifeboat capture on host-a (pid 41)", TTL, clock, keepalive=False)
    other = CaptureLock(etcd, "prod", "agent b", TTL, clock, keepalive=False)
    paused.acquire()
    clock.advance(TTL + 1)  # SIGSTOP, or killed: its lease expired and etcd deleted the key
    other.acquire()
    with pytest.raises(NotLeading, match="agent b"):
        paused.hold()
    paused.release()  # its lease is gone already: nothing to revoke, no error
    assert other.hold()


def test_etcd_unreachable_once_the_lease_may_have_run_out_stops_writes() -> None:
    clock = FakeClock()
    etcd = MemoryEtcd(clock)
    lock = CaptureLock(etcd, "prod", "agent a", TTL, clock, keepalive=False)
    lock.acquire()
    clock.advance(TTL * 0.8)
    etcd.inject(Fault("lease_keepalive_once", EtcdUnavailable("etcd at memory is unreachable")))
    with pytest.raises(NotLeading, match="cannot confirm the capture lock of cluster prod: etcd at memory"):
        lock.hold()
    assert lock.hold(), "etcd back: the same lease renewed"


def test_a_value_not_written_by_lifeboat_is_not_shown() -> None:
    clock = FakeClock()
    etcd = MemoryEtcd(clock)
    etcd.put(lock_key("prod"), b"password=" + b"x" * 5000)
    with pytest.raises(NotLeading) as refused:
        CaptureLock(etcd, "prod", "agent a", TTL, clock, keepalive=False).acquire()
    message = str(refused.value)
    assert "a holder lifeboat did not write (5009 bytes, not shown)" in message
    assert "password" not in message and "xxx" not in message


@pytest.mark.parametrize("record", [{"holder": "agent a\nlifeboat: forged line", "since": "2026-12-03"},
                                    {"holder": ["agent a"], "since": "2026-12-03"},
                                    {"holder": "agent a", "since": 20261203}])
def test_a_record_whose_fields_are_not_lines_of_text_is_not_shown(record: dict[str, object]) -> None:
    clock = FakeClock()
    etcd = MemoryEtcd(clock)
    value = json.dumps(record).encode()
    etcd.put(lock_key("prod"), value)
    with pytest.raises(NotLeading) as refused:
        CaptureLock(etcd, "prod", "agent b", TTL, clock, keepalive=False).acquire()
    message = str(refused.value)
    assert f"a holder lifeboat did not write ({len(value)} bytes, not shown)" in message
    assert "\n" not in message and "agent a" not in message


def test_the_renewer_keeps_the_lock_past_its_ttl_and_release_stops_it() -> None:
    etcd = MemoryEtcd(SystemClock())
    lock = CaptureLock(etcd, "prod", "agent a", 2, SystemClock())
    lock.acquire()
    try:
        time.sleep(2.6)  # longer than the TTL, with no call to hold()
        with pytest.raises(NotLeading):
            CaptureLock(etcd, "prod", "agent b", 2, SystemClock(), keepalive=False).acquire()
    finally:
        lock.release()
    assert etcd.get(lock_key("prod")) is None
    assert not any(t.name == "capture-lock-renewer" for t in threading.enumerate())


def test_a_capture_waits_while_another_holds_the_lock_and_starts_once_it_is_free(tmp_path: Path) -> None:
    store = MemoryStore()
    repo, chains = resumable(store)
    etcd = MemoryEtcd()
    theirs = CaptureLock(etcd, "prod", "lifeboat capture on host-a (pid 41)", 2, SystemClock(), keepalive=False)
    theirs.acquire()
    ours = CaptureLock(etcd, "prod", "agent b", 2, SystemClock())
    status = CaptureStatus()
    stop = threading.Event()
    runner = threading.Thread(target=Capture(etcd, repo, options_for(tmp_path, 0.05), stop=stop, status=status,
                                             fence=ours.hold).run, daemon=True)
    runner.start()
    try:
        until(lambda: bool(status.errors))
        written = etcd.put("/registry/k", b"v")
        time.sleep(0.3)  # several retries while the other holds the lock
        assert status.chain is None and chains.chains("prod")[0].segments == ()
        assert status.errors == [f"another capture of cluster prod is running: lifeboat capture on host-a (pid 41) "
                                 f"(since {theirs_since(etcd)}) holds etcd key /lifeboat/prod/capture; stop it, "
                                 "or wait for it to end (one killed without SIGTERM frees it within 2s)"], \
            "noted once, not once per retry"
        assert status.fenced == status.errors[0]
        theirs.release()  # its key's deletion and ours are revisions too: capture sees its own lock
        until(lambda: status.last_revision > written)
    finally:
        stop.set()
        runner.join(10)
        ours.release()
    assert status.fenced is None
    segments = chains.chains("prod")[0].segments
    assert segments[0].first_revision == 2, "resumed right after the base: nothing missed while waiting"
    assert all(b.first_revision == a.last_revision + 1 for a, b in zip(segments, segments[1:]))


def theirs_since(etcd: MemoryEtcd) -> str:
    kv = etcd.get(lock_key("prod"))
    assert kv is not None
    return str(json.loads(kv.value)["since"])


def test_a_note_repeated_by_retries_is_logged_once_and_again_after_capture_worked_in_between(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    repo, chains = resumable(store)
    etcd = MemoryEtcd()
    busy = threading.Event()
    busy.set()

    def fence() -> bool:
        if busy.is_set():
            raise NotLeading("another capture of cluster prod is running: agent a")
        return True

    status = CaptureStatus()
    stop = threading.Event()
    runner = threading.Thread(target=Capture(etcd, repo, options_for(tmp_path, 0.05), stop=stop, status=status,
                                             fence=fence).run, daemon=True)
    with caplog.at_level("WARNING", logger="lifeboat.capture"):
        runner.start()
        try:
            time.sleep(0.4)  # a retry every 0.05 s
            busy.clear()
            written = etcd.put("/registry/k", b"v")
            until(lambda: status.last_revision == written)
            busy.set()  # held by another again: news, not a repeat
            etcd.put("/registry/k", b"w")
            until(lambda: len(status.errors) == 2)
            time.sleep(0.3)
        finally:
            stop.set()
            runner.join(10)
    message = "capture: another capture of cluster prod is running: agent a"
    assert [r.getMessage() for r in caplog.records].count(message) == 2
    assert status.errors == [message.removeprefix("capture: ")] * 2

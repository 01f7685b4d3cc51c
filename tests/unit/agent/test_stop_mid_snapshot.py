"""Stopping the agent ends a snapshot stream that waits on a stalled etcd at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from lifeboat.agent.jobs import Abandoned, _StoppableSource
from lifeboat.errors import EtcdUnavailable


class _StalledStream(Iterator[bytes]):
    """A snapshot stream whose etcd sent one chunk and then froze: the next read waits until
    it is cancelled (what gRPC does for a call cancelled from another thread)."""

    def __init__(self) -> None:
        self.sent = False
        self.cancelled = threading.Event()
        self.closed = False

    def __next__(self) -> bytes:
        if not self.sent:
            self.sent = True
            return b"x" * 32768
        self.cancelled.wait()
        raise EtcdUnavailable("snapshot from http://127.0.0.1:2379: cancelled")

    def cancel(self) -> None:
        self.cancelled.set()

    def close(self) -> None:
        self.closed = True


class _FrozenEtcd:
    def __init__(self) -> None:
        self.stream = _StalledStream()

    def snapshot(self, endpoint: str) -> Iterator[bytes]:
        return self.stream


def test_a_stop_ends_a_snapshot_read_waiting_on_a_stalled_etcd_at_once() -> None:
    """The stop flag was looked at between chunks only: with etcd frozen mid-stream the agent
    waited for gRPC's keepalive to give up (about 70 s), past the 30 s systemd and Kubernetes
    give it (deploy/) before SIGKILL."""
    etcd, stop = _FrozenEtcd(), threading.Event()
    stream = _StoppableSource(etcd, stop).snapshot("http://127.0.0.1:2379")  # type: ignore[arg-type]
    assert next(stream) == b"x" * 32768
    ended: list[BaseException] = []

    def read() -> None:
        try:
            next(stream)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            ended.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    stop.set()
    reader.join(5)
    if reader.is_alive():
        etcd.stream.cancel()  # let the stuck thread end
        pytest.fail("the stop did not end the stalled snapshot read")
    assert isinstance(ended[0], Abandoned) and etcd.stream.closed


def test_a_stream_that_ends_on_its_own_leaves_no_watcher_behind() -> None:
    class _Chunks(Iterator[bytes]):
        def __init__(self) -> None:
            self.left = [b"a", b"b"]

        def __next__(self) -> bytes:
            if not self.left:
                raise StopIteration
            return self.left.pop(0)

        def cancel(self) -> None:
            raise AssertionError("a stream that ended is not cancelled")

    class _Short:
        def snapshot(self, endpoint: str) -> Iterator[bytes]:
            return _Chunks()

    before = threading.active_count()
    chunks = list(_StoppableSource(_Short(), threading.Event()).snapshot("e"))  # type: ignore[arg-type]
    assert chunks == [b"a", b"b"]
    for _ in range(50):
        if threading.active_count() <= before:
            break
        threading.Event().wait(0.02)
    assert threading.active_count() <= before


def test_a_stream_never_read_starts_no_watcher() -> None:
    """A backup that fails before it reads the stream (no room, an encoder that cannot start)
    never closes it: a watcher started with it would poll until the agent stops, one per failure."""
    before = threading.active_count()
    _StoppableSource(_FrozenEtcd(), threading.Event()).snapshot("e")  # type: ignore[arg-type]
    assert threading.active_count() == before

"""What every gRPC channel to etcd is opened with: the stream window that bounds a backup's memory."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from lifeboat.etcd import channels
from lifeboat.etcd.channels import STREAM_WINDOW_BYTES, EndpointPool
from lifeboat.etcd.client import EtcdClient
from lifeboat.etcd.settings import ConnectionSettings
from lifeboat.etcdapi.proto import rpc_pb2


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    real = grpc.insecure_channel

    def insecure_channel(target: str, options: Any = None) -> Any:
        seen.append(dict(options or ()))
        return real(target, options)

    monkeypatch.setattr(channels.grpc, "insecure_channel", insecure_channel)
    return seen


def test_channels_to_etcd_have_a_fixed_stream_window_without_the_bdp_probe(opened: list[dict[str, Any]]) -> None:
    # A snapshot streamed faster than the pipeline drains it is held in the client up to the
    # stream's flow-control window: with gRPC's bandwidth-delay probe on, that window grew
    # and a backup held 20-75 MiB more than with it fixed.
    pool = EndpointPool(ConnectionSettings(endpoints=("http://127.0.0.1:9",)))
    try:
        pool._connection(pool.endpoints[0])
    finally:
        pool.close()
    (options,) = opened
    assert options["grpc.http2.bdp_probe"] == 0
    assert options["grpc.http2.lookahead_bytes"] == STREAM_WINDOW_BYTES
    assert 64 << 10 <= STREAM_WINDOW_BYTES <= 4 << 20


def test_the_stream_channel_keeps_the_window(opened: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    pool = EndpointPool(ConnectionSettings(endpoints=("http://127.0.0.1:9",)))
    monkeypatch.setattr(pool, "stubs_for", lambda what, endpoint=None: channels.Stubs(
        pool.endpoints[0], None, None, None, None, None))
    _, channel = pool.stream_channel("watch")
    channel.close()
    (options,) = opened
    assert options["grpc.http2.bdp_probe"] == 0
    assert options["grpc.http2.lookahead_bytes"] == STREAM_WINDOW_BYTES


class _Streamed:
    """What a snapshot's own channel was opened with, whether it was closed, and a stream to read."""

    def __init__(self, responses: list[rpc_pb2.SnapshotResponse]) -> None:
        self.responses = responses
        self.options: dict[str, Any] = {}
        self.closed = False
        self.cancelled = False

    def channel(self, target: str, options: Any = None) -> Any:
        self.options = dict(options or ())
        return self

    def unary_unary(self, method: str, *_: Any, **__: Any) -> None:
        return None  # the other Maintenance calls are not made on this channel

    def unary_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     **_: Any) -> Any:
        assert method == "/etcdserverpb.Maintenance/Snapshot"

        def call(request: Any, **_: Any) -> Any:
            streamed = self

            class Call:
                def __iter__(self) -> Any:
                    return iter(streamed.responses)

                def cancel(self) -> None:
                    streamed.cancelled = True

            return Call()

        return call

    def close(self) -> None:
        self.closed = True


def test_a_snapshot_is_read_on_a_single_threaded_channel_of_its_own_closed_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On a shared channel gRPC's polling thread took each 32 KiB message and woke the reader
    # for it: a fifth of the stream's CPU. The window bounding memory stays.
    streamed = _Streamed([rpc_pb2.SnapshotResponse(blob=b"db", remaining_bytes=32),
                          rpc_pb2.SnapshotResponse(blob=b"sum", remaining_bytes=0)])
    client = EtcdClient(ConnectionSettings(endpoints=("http://127.0.0.1:9",)))
    monkeypatch.setattr(client._pool, "stubs_for", lambda what, endpoint=None: channels.Stubs(
        client._pool.endpoints[0], None, None, None, None, None))
    monkeypatch.setattr(channels.grpc, "insecure_channel", streamed.channel)
    chunks = client.snapshot("http://127.0.0.1:9")
    assert not streamed.options  # opened by the thread that reads it, once it reads
    assert list(chunks) == [b"db", b"sum"]
    assert streamed.options["SingleThreadedUnaryStream"] == 1
    assert streamed.options["grpc.http2.lookahead_bytes"] == STREAM_WINDOW_BYTES
    assert streamed.cancelled and streamed.closed

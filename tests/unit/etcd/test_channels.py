"""What every gRPC channel to etcd is opened with: the stream window that bounds a backup's memory."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from lifeboat.etcd import channels
from lifeboat.etcd.channels import STREAM_WINDOW_BYTES, EndpointPool
from lifeboat.etcd.settings import ConnectionSettings


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

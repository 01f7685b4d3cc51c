"""gRPC channels to etcd endpoints, and the failover loop every unary call goes through."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from lifeboat.etcd.certificates import server_certificate_problem
from lifeboat.etcd.failures import (
    Attempt,
    Kind,
    attempt,
    exhausted,
    translate,
    write_timed_out,
)
from lifeboat.etcdapi.proto import rpc_pb2, rpc_pb2_grpc
from lifeboat.etcd.settings import (
    ConnectionSettings,
    Endpoint,
    TlsMaterial,
    parse_endpoint,
)

T = TypeVar("T")

# The generated service stubs carry no type hints; callers get Any-typed stubs either way.
_services: Any = rpc_pb2_grpc

# etcd's own client accepts messages up to math.MaxInt32; big Range pages need far more
# than grpc's 4 MiB default.
MAX_MESSAGE_BYTES = 2**31 - 1

# What etcd may send on one stream before we have read it (HTTP/2's flow-control window).
# gRPC's default grows it with its bandwidth-delay probe while the sender outpaces the reader:
# a snapshot streamed faster than the backup's pipeline drained it held 20-75 MiB more in the
# client. Fixed at 2 MiB, what is held is 3-4 times that (frames, the message, its bytes), and
# on loopback it still carries the stream as fast as etcd sends it (docs/benchmarks.md).
STREAM_WINDOW_BYTES = 2 << 20

_CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", STREAM_WINDOW_BYTES),
    # Pings detect a dead or paused member under a long Snapshot or Watch stream. etcd
    # refuses pings more often than --grpc-keepalive-min-time (5s by default) and pings
    # without an active stream, hence 10s and permit_without_calls=0.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    # A member that comes back is retried within seconds, not grpc's default two minutes.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)

@dataclass(frozen=True)
class Stubs:
    """The etcd services on one channel."""

    endpoint: Endpoint
    kv: Any
    watch: Any
    lease: Any
    cluster: Any
    maintenance: Any


# grpc.experimental.ChannelOptions.SingleThreadedUnaryStream: a server stream on such a
# channel is read by the thread that iterates it, without grpc's own polling thread.
_SINGLE_THREADED_STREAM = ("SingleThreadedUnaryStream", 1)


def _open_channel(endpoint: Endpoint, credentials: grpc.ChannelCredentials | None,
                  options: tuple[tuple[str, int], ...] = _CHANNEL_OPTIONS) -> grpc.Channel:
    if credentials is None:
        return grpc.insecure_channel(endpoint.target, options=options)
    return grpc.secure_channel(endpoint.target, credentials, options=options)


class _Connection:
    def __init__(self, endpoint: Endpoint, credentials: grpc.ChannelCredentials | None) -> None:
        self.endpoint = endpoint
        self.channel = _open_channel(endpoint, credentials)
        self.stubs = Stubs(
            endpoint=endpoint,
            kv=_services.KVStub(self.channel),
            watch=_services.WatchStub(self.channel),
            lease=_services.LeaseStub(self.channel),
            cluster=_services.ClusterStub(self.channel),
            maintenance=_services.MaintenanceStub(self.channel),
        )
        self.proven = False

    def prove(self, dial_timeout: float) -> None:
        """Check once that the endpoint answers; raises the ``grpc.RpcError`` when not.

        A Status call without wait_for_ready fails at once with grpc's reason when the
        connection failed (refused, TLS handshake) and otherwise waits for the connection,
        so one call both bounds connecting by ``dial_timeout`` and says why it failed.
        Status is answered from the member's local state and needs no etcd role.
        """
        if not self.proven:
            self.stubs.maintenance.Status(rpc_pb2.StatusRequest(), timeout=dial_timeout, wait_for_ready=False)
            self.proven = True


class EndpointPool:
    """One lazily opened channel per endpoint; calls fail over between the configured ones."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.endpoints = settings.parsed_endpoints()
        self._material: TlsMaterial | None = settings.tls.load() if settings.tls else None
        self._connections: dict[str, _Connection] = {}
        self._preferred = 0
        self._lock = threading.Lock()

    def _credentials(self, endpoint: Endpoint) -> grpc.ChannelCredentials | None:
        if not endpoint.uses_tls(self._material is not None):
            return None
        material = self._material or TlsMaterial(None, None, None)
        return grpc.ssl_channel_credentials(
            root_certificates=material.ca, private_key=material.key, certificate_chain=material.cert
        )

    def _connection(self, endpoint: Endpoint) -> _Connection:
        with self._lock:
            found = self._connections.get(endpoint.url)
            if found is None:
                found = _Connection(endpoint, self._credentials(endpoint))
                self._connections[endpoint.url] = found
            return found

    def resolve(self, endpoint: str) -> Endpoint:
        """The configured endpoint with this URL, or a new one (e.g. a member's client URL)."""
        for known in self.endpoints:
            if endpoint in (known.url, known.target):
                return known
        return parse_endpoint(endpoint)

    def _order(self) -> list[Endpoint]:
        start = self._preferred
        return [self.endpoints[(start + i) % len(self.endpoints)] for i in range(len(self.endpoints))]

    def call(
        self, what: str, invoke: Callable[[Stubs, float], T], *,
        idempotent: bool = True, endpoint: str | None = None, within: float | None = None,
    ) -> T:
        """Run ``invoke`` on one endpoint after another until one answers.

        With ``endpoint`` only that one is tried. ``UNAVAILABLE`` and TLS failures move on
        to the next endpoint; a deadline moves on only for ``idempotent`` calls, since a
        write that timed out may have been applied. ``within``: each endpoint gets at most
        that long (to connect, and to answer) instead of the settings' timeouts, for a call
        that is useless later, such as a lease renewal that must land before the lease ends.
        """
        candidates = [self.resolve(endpoint)] if endpoint else self._order()
        dial, command = self.settings.dial_timeout, self.settings.command_timeout
        if within is not None:
            dial, command = min(dial, within), min(command, within)
        attempts: list[Attempt] = []
        for candidate in candidates:
            connection = self._connection(candidate)
            try:
                connection.prove(dial)
            except grpc.RpcError as error:
                failed = attempt(candidate.url, error)
                if failed.kind is Kind.FINAL:
                    raise translate(what, candidate.url, error) from None
                if failed.kind is Kind.TLS and "not signed by the CA" in failed.reason:
                    # Verification failed; an expired certificate fails it with the same words.
                    tls = self.settings.tls
                    expired = server_certificate_problem(candidate.host, candidate.port, dial,
                                                         tls.cert if tls else None, tls.key if tls else None)
                    failed = Attempt(candidate.url, Kind.TLS, expired) if expired else failed
                if failed.kind is Kind.TIMEOUT:
                    failed = Attempt(candidate.url, Kind.UNREACHABLE,
                                     f"no answer within {dial:g}s" if within is not None else
                                     f"no answer within --dial-timeout {dial:g}s")
                attempts.append(failed)
                continue
            try:
                result = invoke(connection.stubs, command)
            except grpc.RpcError as error:
                failed = attempt(candidate.url, error)
                connection.proven = False
                if failed.kind is Kind.TIMEOUT and not idempotent:
                    raise write_timed_out(what, candidate.url, self.settings.command_timeout) from None
                if failed.kind is Kind.FINAL:
                    raise translate(what, candidate.url, error) from None
                attempts.append(failed)
                continue
            if endpoint is None:
                self._preferred = self.endpoints.index(candidate)
            return result
        raise exhausted(what, attempts)

    def stubs_for(self, what: str, endpoint: str | None = None) -> Stubs:
        """The stubs of an endpoint that answers now, for a streaming call (no failover once it started).

        Asked now (a Status call), not taken on an earlier call's word: a member that hangs
        since (stopped, a stalled disk) keeps its connection, and every stream opened on it
        again would wait for an answer that never comes.
        """
        def answering(stubs: Stubs, timeout: float) -> Stubs:
            stubs.maintenance.Status(rpc_pb2.StatusRequest(), timeout=timeout)
            return stubs

        return self.call(what, answering, endpoint=endpoint, within=self.settings.dial_timeout)

    def stream_channel(self, what: str, endpoint: str | None = None) -> tuple[Endpoint, grpc.Channel]:
        """A channel of its own to an endpoint that answers (``endpoint`` only, when given), for
        one server stream read on one thread.

        The caller closes it when the stream ends.
        """
        answering = self.stubs_for(what, endpoint).endpoint
        options = (*_CHANNEL_OPTIONS, _SINGLE_THREADED_STREAM)
        return answering, _open_channel(answering, self._credentials(answering), options)

    def close(self) -> None:
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            connection.channel.close()


"""lifeboat's client for a live etcd (v3 gRPC API, etcd 3.4 and 3.5).

Contract:

* Every method returns immutable values from :mod:`lifeboat.etcdapi.model` (never protobuf
  messages) or raises a :class:`~lifeboat.errors.LifeboatError`; gRPC errors are
  translated in :mod:`lifeboat.etcd.failures` and nowhere else.
* Failover: calls without a named endpoint try the configured endpoints in turn,
  starting with the last one that answered. An endpoint that cannot be connected to
  within ``dial_timeout``, answers ``UNAVAILABLE`` (etcd also says so when a member has
  no leader) or fails the TLS handshake is skipped. A deadline moves on to the next
  endpoint only for reads; a write that timed out raises at once, since it may have
  been applied.
* Deadlines: every unary call has ``command_timeout`` per endpoint tried. Streams
  (``snapshot``, ``watch``) have no overall deadline; gRPC keepalive pings (every 10s)
  end them when the member stops answering.
* Errors: nothing answered → :class:`~lifeboat.errors.EtcdUnavailable` listing every
  endpoint tried and why; TLS refused on either side, ``UNAUTHENTICATED`` or
  ``PERMISSION_DENIED`` → :class:`~lifeboat.errors.EtcdAuthError`; a read or watch at a
  compacted revision → :class:`RevisionCompacted` (a ``NotFound``); any other refusal
  by etcd → :class:`~lifeboat.errors.OperationFailed`. Unreadable TLS files →
  :class:`~lifeboat.errors.UsageError` naming ``--cacert``, ``--cert`` or ``--key``.
* ``status``, ``snapshot``, ``hash_kv`` and ``defragment`` go to the one endpoint
  named, never another: they describe or act on that member only.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

import grpc

from lifeboat.clock import Clock, SystemClock
from lifeboat.errors import OperationFailed
from lifeboat.etcd import decode
from lifeboat.etcd import txn as txn_messages
from lifeboat.etcd.channels import EndpointPool, Stubs
from lifeboat.etcd.failures import RevisionCompacted, broke_off
from lifeboat.etcd.keys import Key, as_bytes, key_range
from lifeboat.etcdapi.model import Alarm, HashKV, KeyValue, Member, MemberList, MemberStatus, RangePage
from lifeboat.etcdapi.model import LeaseTimeToLive as LeaseTtl
from lifeboat.etcdapi.proto import rpc_pb2, rpc_pb2_grpc
from lifeboat.etcd.seam import KeyValueReads
from lifeboat.etcd.settings import ConnectionSettings
from lifeboat.etcd.txn import Compare, Operation, TxnResult
from lifeboat.etcd.watch import FEED_MAX_WAITING_BYTES, LaggingFeed, WatchFeed, WatchStream


# The generated service stubs carry no type hints.
_services: Any = rpc_pb2_grpc


class EtcdClient(KeyValueReads):
    """A connection to one etcd cluster; see the module docstring for the contract.

    ``clock`` stamps the arrival of watch responses (``follow``), as the etcd double's does.
    """

    def __init__(self, settings: ConnectionSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self._pool = EndpointPool(settings)

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.close()

    # ---- cluster and maintenance ----

    def status(self, endpoint: str) -> MemberStatus:
        """The status of the member serving ``endpoint``."""
        url = self._pool.resolve(endpoint).url
        response = self._pool.call(
            f"status of {url}", lambda s, t: s.maintenance.Status(rpc_pb2.StatusRequest(), timeout=t),
            endpoint=endpoint,
        )
        return decode.member_status(url, response)

    def member_list(self) -> MemberList:
        """Every member of the cluster, and the cluster id."""
        response = self._pool.call(
            "member list", lambda s, t: s.cluster.MemberList(rpc_pb2.MemberListRequest(), timeout=t)
        )
        return MemberList(
            cluster_id=response.header.cluster_id,
            members=tuple(decode.member(m) for m in response.members),
            answered_by=response.header.member_id,
        )

    def alarms(self) -> list[Alarm]:
        """The alarms raised anywhere in the cluster (NOSPACE, CORRUPT)."""
        request = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET, memberID=0, alarm=rpc_pb2.NONE)
        response = self._pool.call("alarm list", lambda s, t: s.maintenance.Alarm(request, timeout=t))
        return [decode.alarm(a) for a in response.alarms]

    def hash_kv(self, endpoint: str, revision: int = 0) -> HashKV:
        """The member's hash of its MVCC keys up to ``revision`` (0: its newest)."""
        response = self._pool.call(
            f"hash of {endpoint}",
            lambda s, t: s.maintenance.HashKV(rpc_pb2.HashKVRequest(revision=revision), timeout=t),
            endpoint=endpoint,
        )
        return HashKV(
            hash=response.hash, compact_revision=response.compact_revision,
            revision=revision or response.header.revision, member_id=response.header.member_id,
        )

    def defragment(self, endpoint: str) -> None:
        """Defragment the backend of the member serving ``endpoint`` (it stalls meanwhile)."""
        self._pool.call(
            f"defragment {endpoint}",
            lambda s, t: s.maintenance.Defragment(rpc_pb2.DefragmentRequest(), timeout=t),
            endpoint=endpoint, idempotent=False,
        )

    def snapshot(self, endpoint: str) -> SnapshotStream:
        """Stream the member's backend database, chunk by chunk, exactly as etcd sends it.

        The chunks end with the 32-byte sha256 etcd appends to the db bytes. Nothing is
        buffered beyond one chunk. A stream that ends before etcd said it was complete
        raises ``OperationFailed``. :meth:`SnapshotStream.cancel` ends it from another thread.
        """
        what = f"snapshot from {endpoint}"
        self._pool.stubs_for(what, endpoint)  # a member that does not answer fails here, not mid-stream
        return SnapshotStream(self._pool, what, endpoint)

    def member_add(self, peer_urls: Sequence[str], *, learner: bool = False) -> Member:
        """Add a member (as a learner when asked); start it afterwards with state ``existing``."""
        request = rpc_pb2.MemberAddRequest(peerURLs=list(peer_urls), isLearner=learner)
        response = self._pool.call(
            "member add", lambda s, t: s.cluster.MemberAdd(request, timeout=t), idempotent=False
        )
        return decode.member(response.member)

    def member_remove(self, member_id: int) -> tuple[Member, ...]:
        """Remove a member; returns the members left."""
        request = rpc_pb2.MemberRemoveRequest(ID=member_id)
        return self._members_after(f"member remove {member_id:x}",
                                   lambda s, t: s.cluster.MemberRemove(request, timeout=t))

    def member_promote(self, member_id: int) -> tuple[Member, ...]:
        """Promote a learner that caught up to a voting member; returns the members after."""
        request = rpc_pb2.MemberPromoteRequest(ID=member_id)
        return self._members_after(f"member promote {member_id:x}",
                                   lambda s, t: s.cluster.MemberPromote(request, timeout=t))

    def _members_after(
        self, what: str,
        change: Callable[[Stubs, float], rpc_pb2.MemberRemoveResponse | rpc_pb2.MemberPromoteResponse],
    ) -> tuple[Member, ...]:
        """Make one membership change (never retried: it is not idempotent); the members after it."""
        response = self._pool.call(what, change, idempotent=False)
        return tuple(decode.member(m) for m in response.members)

    # ---- keys ----

    def range(
        self, key: Key, range_end: Key | None = None, *, prefix: bool = False, revision: int = 0,
        limit: int = 0, keys_only: bool = False, serializable: bool = False,
    ) -> RangePage:
        """One Range call: ``key`` alone, ``[key, range_end)``, or every key under ``prefix``."""
        start, end = key_range(key, range_end, prefix)
        request = rpc_pb2.RangeRequest(
            key=start, range_end=end, revision=revision, limit=limit,
            keys_only=keys_only, serializable=serializable,
        )
        response = self._pool.call("range", lambda s, t: s.kv.Range(request, timeout=t))
        return decode.range_page(response)

    def put(self, key: Key, value: bytes, lease: int = 0) -> int:
        """Write ``key``; returns the revision of the write."""
        request = rpc_pb2.PutRequest(key=as_bytes(key), value=value, lease=lease)
        response = self._pool.call("put", lambda s, t: s.kv.Put(request, timeout=t), idempotent=False)
        return int(response.header.revision)

    def delete_range(self, key: Key, range_end: Key | None = None, *, prefix: bool = False) -> int:
        """Delete ``key``, ``[key, range_end)`` or a prefix; returns how many keys went."""
        start, end = key_range(key, range_end, prefix)
        request = rpc_pb2.DeleteRangeRequest(key=start, range_end=end)
        response = self._pool.call(
            "delete", lambda s, t: s.kv.DeleteRange(request, timeout=t), idempotent=False
        )
        return int(response.deleted)

    def txn(
        self, compare: Sequence[Compare], success: Sequence[Operation],
        failure: Sequence[Operation] = (),
    ) -> TxnResult:
        """Run ``success`` if every compare holds, else ``failure``; atomically."""
        request = txn_messages.request(list(compare), list(success), list(failure))
        response = self._pool.call("txn", lambda s, t: s.kv.Txn(request, timeout=t), idempotent=False)
        return txn_messages.result(response)

    def compact(self, revision: int, *, physical: bool = False) -> None:
        """Drop history older than ``revision``; ``physical`` waits until the db file has it."""
        request = rpc_pb2.CompactionRequest(revision=revision, physical=physical)
        self._pool.call("compact", lambda s, t: s.kv.Compact(request, timeout=t), idempotent=False)

    def watch(
        self, key: Key, range_end: Key | None = None, *, prefix: bool = False,
        start_revision: int = 0, prev_kv: bool = False,
    ) -> WatchStream:
        """Watch a key, range or prefix from ``start_revision`` (0: from now on)."""
        start, end = key_range(key, range_end, prefix)
        create = rpc_pb2.WatchCreateRequest(
            key=start, range_end=end, start_revision=start_revision, prev_kv=prev_kv
        )
        stubs = self._pool.stubs_for("watch")
        return WatchStream(stubs, create, self.settings.command_timeout)

    def follow(self, start_revision: int, *, lag: float = 0.0,
               max_waiting_bytes: int = FEED_MAX_WAITING_BYTES) -> WatchFeed | LaggingFeed:
        """Every event of the whole keyspace from ``start_revision``, for a reader that takes them in
        batches; etcd's sending waits while ``max_waiting_bytes`` of them wait to be taken.

        ``lag`` > 0: read in passes that many seconds apart (:class:`LaggingFeed`, a fraction of
        the cost to etcd's puts); 0: one watch that gets each revision as it commits.
        """
        start, end = key_range(b"", None, True)
        create = rpc_pb2.WatchCreateRequest(key=start, range_end=end, start_revision=start_revision)
        endpoint, channel = self._pool.stream_channel("watch")
        if lag > 0:
            return LaggingFeed(channel, endpoint.url, create, lag, self.settings.command_timeout, self.clock,
                               max_waiting_bytes)
        return WatchFeed(channel, endpoint.url, create, self.settings.command_timeout, self.clock,
                         max_waiting_bytes)

    def refuses_watch_from(self, revision: int, wait: float = 5.0) -> bool:
        """Whether etcd refuses a watch from ``revision`` because it is compacted.

        etcd answers such a watch at once with a cancel carrying its compact revision
        (mvcc/watchable_store.go); a watch it accepts is cancelled after ``wait`` seconds.
        """
        try:
            with self.watch(b"\0", prefix=True, start_revision=revision) as stream:
                stream.next_event(timeout=wait)
        except RevisionCompacted:
            return True
        return False

    # ---- leases ----

    def lease_grant(self, ttl: int) -> int:
        """Grant a lease of ``ttl`` seconds; returns its id."""
        request = rpc_pb2.LeaseGrantRequest(TTL=ttl)
        response = self._pool.call(
            "lease grant", lambda s, t: s.lease.LeaseGrant(request, timeout=t), idempotent=False
        )
        if response.error:
            raise OperationFailed(f"lease grant refused by etcd: {response.error}")
        return int(response.ID)

    def lease_keepalive_once(self, lease_id: int, within: float | None = None) -> int:
        """Renew a lease once; returns its new TTL in seconds (0 or less: it is gone).

        ``within``: how long each endpoint may take (at most the settings' timeouts); a member
        that does not answer by then is left for the next, while the lease still holds.
        """

        def renew(stubs: Stubs, timeout: float) -> Any:
            call = stubs.lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)]), timeout=timeout)
            try:
                return next(call, None)
            finally:
                call.cancel()

        response = self._pool.call("lease keepalive", renew, within=within)
        return int(response.TTL) if response is not None else 0

    def lease_revoke(self, lease_id: int) -> None:
        """Revoke a lease; the keys attached to it are deleted."""
        request = rpc_pb2.LeaseRevokeRequest(ID=lease_id)
        self._pool.call("lease revoke", lambda s, t: s.lease.LeaseRevoke(request, timeout=t))

    def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseTtl:
        request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=keys)
        response = self._pool.call(
            "lease time-to-live", lambda s, t: s.lease.LeaseTimeToLive(request, timeout=t)
        )
        return LeaseTtl(
            id=response.ID, ttl=response.TTL, granted_ttl=response.grantedTTL, keys=tuple(response.keys)
        )


class SnapshotStream(Iterator[bytes]):
    """etcd's snapshot stream, read by the thread that iterates it (see :meth:`EtcdClient.snapshot`).

    :meth:`cancel` may come from any other thread: it ends a read that waits on a stalled
    etcd at once, where the stream would otherwise wait for gRPC's keepalive to give up. A
    backup that is abandoned (SIGTERM, an upload that failed) does not wait for that.
    """

    def __init__(self, pool: EndpointPool, what: str, endpoint: str) -> None:
        self._pool, self._what, self._endpoint = pool, what, endpoint
        self._call: Any = None
        self._cancelled = False
        self._chunks = self._read()

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()

    def cancel(self) -> None:
        self._cancelled = True
        call = self._call
        if call is not None:
            call.cancel()

    def _read(self) -> Generator[bytes, None, None]:
        # A channel of its own, read by the thread that iterates this stream: on a shared
        # channel gRPC's polling thread takes each of etcd's 32 KiB messages and wakes the
        # reader for it, a fifth of the stream's CPU (docs/benchmarks.md).
        target, channel = self._pool.stream_channel(self._what, self._endpoint)
        url = target.url
        try:
            self._call = call = _services.MaintenanceStub(channel).Snapshot(rpc_pb2.SnapshotRequest())
            if self._cancelled:  # cancelled before the call existed
                call.cancel()
            complete, received = False, 0
            try:
                for response in call:
                    if response.blob:
                        received += len(response.blob)
                        yield response.blob
                    # etcd counts down remaining_bytes; 0 comes with the last chunk (the trailer).
                    complete = response.remaining_bytes == 0
            except grpc.RpcError as error:
                raise broke_off(f"snapshot from {url}", url, received, error) from None
            finally:
                call.cancel()
        finally:
            channel.close()
        if not complete:
            raise OperationFailed(f"snapshot from {url}: the stream ended before etcd finished it; retry")

"""The etcd seam: what lifeboat asks of an etcd cluster, offered by the real client and the double.

:class:`~lifeboat.etcd.client.EtcdClient` talks to a live cluster over gRPC;
:class:`~lifeboat.etcd.memory.MemoryEtcd` is the in-memory double for unit tests. Code that
only needs keys, leases, watches and membership takes an :class:`Etcd`, or the part of it
that it uses (:class:`ClusterView`, :class:`MembershipChanges`); both satisfy them.
Reads and writes that are built from others (paging, ``get``, ``put_if_absent``) live in
:class:`KeyValueReads` so the two cannot drift apart.

The contract both honour (etcd's own semantics, from its v3 API documentation):

* Every write of keys is one transaction at one new store revision; a delete of nothing
  and a read-only txn write no revision.
* A read at a revision older than the last compaction raises
  :class:`~lifeboat.etcd.failures.RevisionCompacted`; so does a watch from such a revision,
  when it is created or when iteration reaches it.
* Nothing answering raises :class:`~lifeboat.errors.EtcdUnavailable`; any other refusal
  :class:`~lifeboat.errors.OperationFailed`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from lifeboat.etcd.keys import Key, key_range
from lifeboat.etcd.txn import Compare, Operation, Put, TxnResult, key_absent
from lifeboat.etcdapi.model import Alarm, KeyValue, LeaseTimeToLive, Member, MemberList, MemberStatus
from lifeboat.etcdapi.model import RangePage, WatchEvent


class Watch(Protocol):
    """Events of one watcher in revision order; iterate it, ``close()`` cancels it."""

    revision: int  # the store revision when the watch was created

    def next_event(self, timeout: float | None = None) -> WatchEvent | None:
        """The next event, or None when none came within ``timeout`` or the watch ended."""
        ...

    def __iter__(self) -> Iterator[WatchEvent]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Watch: ...

    def __exit__(self, *exc: object) -> None: ...


class ClusterView(Protocol):
    """What reading a cluster's health asks of etcd: its members, what each says of itself, alarms."""

    def status(self, endpoint: str) -> MemberStatus: ...

    def member_list(self) -> MemberList: ...

    def alarms(self) -> list[Alarm]: ...


class MembershipChanges(ClusterView, Protocol):
    """A cluster view that can also add, remove and promote members (each one raft change)."""

    def member_add(self, peer_urls: Sequence[str], *, learner: bool = False) -> Member: ...

    def member_remove(self, member_id: int) -> tuple[Member, ...]: ...

    def member_promote(self, member_id: int) -> tuple[Member, ...]: ...


class Etcd(MembershipChanges, Protocol):
    """An etcd cluster as lifeboat uses it: membership, keys, transactions, leases, watches."""

    def range(
        self, key: Key, range_end: Key | None = None, *, prefix: bool = False, revision: int = 0,
        limit: int = 0, keys_only: bool = False, serializable: bool = False,
    ) -> RangePage: ...

    def range_pages(
        self, key: Key = b"", range_end: Key | None = None, *, prefix: bool = False,
        revision: int = 0, page_size: int = 1000, keys_only: bool = False,
    ) -> Iterator[RangePage]: ...

    def range_all(
        self, key: Key = b"", range_end: Key | None = None, *, prefix: bool = False,
        revision: int = 0, page_size: int = 1000, keys_only: bool = False,
    ) -> Iterator[KeyValue]: ...

    def get(self, key: Key, *, revision: int = 0) -> KeyValue | None: ...

    def put(self, key: Key, value: bytes, lease: int = 0) -> int: ...

    def delete_range(self, key: Key, range_end: Key | None = None, *, prefix: bool = False) -> int: ...

    def txn(
        self, compare: Sequence[Compare], success: Sequence[Operation], failure: Sequence[Operation] = (),
    ) -> TxnResult: ...

    def put_if_absent(self, key: Key, value: bytes, lease: int = 0) -> bool: ...

    def compact(self, revision: int, *, physical: bool = False) -> None: ...

    def watch(
        self, key: Key, range_end: Key | None = None, *, prefix: bool = False,
        start_revision: int = 0, prev_kv: bool = False,
    ) -> Watch: ...

    def lease_grant(self, ttl: int) -> int: ...

    def lease_keepalive_once(self, lease_id: int, within: float | None = None) -> int: ...

    def lease_revoke(self, lease_id: int) -> None: ...

    def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseTimeToLive: ...


class KeyValueReads:
    """Reads and writes built from ``range`` and ``txn``, shared by the client and the double."""

    def range(
        self, key: Key, range_end: Key | None = None, *, prefix: bool = False, revision: int = 0,
        limit: int = 0, keys_only: bool = False, serializable: bool = False,
    ) -> RangePage:
        raise NotImplementedError

    def txn(
        self, compare: Sequence[Compare], success: Sequence[Operation], failure: Sequence[Operation] = (),
    ) -> TxnResult:
        raise NotImplementedError

    def range_pages(
        self, key: Key = b"", range_end: Key | None = None, *, prefix: bool = False,
        revision: int = 0, page_size: int = 1000, keys_only: bool = False,
    ) -> Iterator[RangePage]:
        """Page through a range; every page is read at the first page's revision.

        An empty ``key`` with ``prefix=True`` pages through the whole keyspace. Keys
        written after the first page never show up, so the pages form one consistent view.
        """
        if page_size <= 0:
            raise ValueError("page_size must be positive")
        start, end = key_range(key, range_end, prefix)
        while True:
            page = self.range(start, end, revision=revision, limit=page_size, keys_only=keys_only)
            revision = revision or page.revision
            yield page
            if not page.more or not page.kvs or not end:
                return
            start = page.kvs[-1].key + b"\0"

    def range_all(
        self, key: Key = b"", range_end: Key | None = None, *, prefix: bool = False,
        revision: int = 0, page_size: int = 1000, keys_only: bool = False,
    ) -> Iterator[KeyValue]:
        """Every key of :meth:`range_pages`, one by one."""
        for page in self.range_pages(
            key, range_end, prefix=prefix, revision=revision, page_size=page_size, keys_only=keys_only
        ):
            yield from page.kvs

    def get(self, key: Key, *, revision: int = 0) -> KeyValue | None:
        kvs = self.range(key, revision=revision).kvs
        return kvs[0] if kvs else None

    def put_if_absent(self, key: Key, value: bytes, lease: int = 0) -> bool:
        """Create ``key`` unless it exists; True when this call created it."""
        return self.txn([key_absent(key)], [Put(key, value, lease)]).succeeded

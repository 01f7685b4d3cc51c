"""An in-memory etcd for agent unit tests: keys, leases with TTLs on a fake clock, txns."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from lifeboat.agent.clock import FakeClock
from lifeboat.errors import EtcdUnavailable
from lifeboat.etcd.keys import Key, as_bytes, prefix_end
from lifeboat.etcdapi.model import KeyValue, RangePage
from lifeboat.etcd.txn import Compare, Delete, Get, Operation, Put, Target, TxnResult
from lifeboat.etcd.txn import Deleted, Written


class FakeEtcd:
    """Lease expiry follows the clock's monotonic time, as etcd's follows its own."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.kv: dict[bytes, KeyValue] = {}
        self.leases: dict[int, tuple[int, float]] = {}  # id -> (ttl, expires at)
        self.revision = 1
        self.next_lease = 0x100
        self.down = False
        self.lock = threading.RLock()

    def _check(self) -> None:
        if self.down:
            raise EtcdUnavailable("fake etcd is down")
        now = self.clock.monotonic()
        for lease, (_, expires) in list(self.leases.items()):
            if expires <= now:
                self._drop_lease(lease)

    def _drop_lease(self, lease: int) -> None:
        del self.leases[lease]
        for key, kv in list(self.kv.items()):
            if kv.lease == lease:
                del self.kv[key]
                self.revision += 1

    def _field(self, cmp: Compare) -> int | bytes:
        kv = self.kv.get(as_bytes(cmp.key))
        if cmp.target is Target.VALUE:
            return kv.value if kv else b""
        if kv is None:
            return 0
        return {Target.VERSION: kv.version, Target.CREATE_REVISION: kv.create_revision,
                Target.MOD_REVISION: kv.mod_revision, Target.LEASE: kv.lease}[cmp.target]

    def _holds(self, cmp: Compare) -> bool:
        have, want = self._field(cmp), cmp.operand
        return {"==": have == want, "!=": have != want,
                "<": have < want, ">": have > want}[cmp.op]  # type: ignore[operator]

    def _put(self, key: bytes, value: bytes, lease: int) -> None:
        if lease and lease not in self.leases:
            raise AssertionError("put with an unknown lease (etcd: requested lease not found)")
        self.revision += 1
        old = self.kv.get(key)
        self.kv[key] = KeyValue(key, value, old.create_revision if old else self.revision,
                                self.revision, (old.version if old else 0) + 1, lease)

    def _range(self, key: bytes, end: bytes) -> list[KeyValue]:
        if not end:
            return [self.kv[key]] if key in self.kv else []
        return [kv for k, kv in sorted(self.kv.items()) if key <= k < end]

    def txn(self, compare: Sequence[Compare], success: Sequence[Operation],
            failure: Sequence[Operation] = ()) -> TxnResult:
        with self.lock:
            self._check()
            ok = all(self._holds(c) for c in compare)
            outcomes: list[Written | Deleted | RangePage] = []
            for op in success if ok else failure:
                if isinstance(op, Put):
                    self._put(as_bytes(op.key), op.value, op.lease)
                    outcomes.append(Written(self.revision))
                elif isinstance(op, Get):
                    kvs = self._range(as_bytes(op.key), as_bytes(op.range_end or b""))
                    outcomes.append(RangePage(tuple(kvs), False, len(kvs), self.revision))
                elif isinstance(op, Delete):
                    gone = self._range(as_bytes(op.key), as_bytes(op.range_end or b""))
                    for kv in gone:
                        del self.kv[kv.key]
                    outcomes.append(Deleted(len(gone)))
            return TxnResult(ok, self.revision, tuple(outcomes))

    def get(self, key: Key, *, revision: int = 0) -> KeyValue | None:
        with self.lock:
            self._check()
            return self.kv.get(as_bytes(key))

    def range_all(self, key: Key, range_end: Key | None = None, *, prefix: bool = False) -> Iterator[KeyValue]:
        with self.lock:
            self._check()
            start = as_bytes(key)
            end = prefix_end(start) if prefix else as_bytes(range_end or b"")
            return iter(self._range(start, end))

    def lease_grant(self, ttl: int) -> int:
        with self.lock:
            self._check()
            self.next_lease += 1
            self.leases[self.next_lease] = (ttl, self.clock.monotonic() + ttl)
            return self.next_lease

    def lease_keepalive_once(self, lease_id: int) -> int:
        with self.lock:
            self._check()
            if lease_id not in self.leases:
                return 0
            ttl, _ = self.leases[lease_id]
            self.leases[lease_id] = (ttl, self.clock.monotonic() + ttl)
            return ttl

    def lease_revoke(self, lease_id: int) -> None:
        with self.lock:
            self._check()
            if lease_id in self.leases:
                self._drop_lease(lease_id)

    def value(self, key: str) -> bytes | None:
        kv = self.kv.get(key.encode())
        return kv.value if kv else None


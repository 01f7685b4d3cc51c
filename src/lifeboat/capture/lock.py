"""One capture per cluster: a key in etcd, on a lease of its own, held while capture writes.

``/lifeboat/<cluster>/capture`` names the capture that may write the cluster's chain (the
agent's capture, or ``lifeboat capture`` run by hand) and when it took the key. It is
created only when absent, on the holder's lease, so two captures can never both hold it,
and etcd deletes it when that lease expires or is revoked: a capture killed with SIGKILL
frees it within one TTL, one stopped cleanly at once. A thread renews the lease every third
of its TTL, also while a base backup takes minutes.

:meth:`CaptureLock.hold` is capture's fence (:class:`lifeboat.capture.run.Capture`): it is
checked before every segment is committed and uploaded, answers without a round trip while
the lease surely outlives the write by a third of its TTL, and otherwise renews the lease and
re-reads the key. Without the lock two captures run by hand (or one by hand beside the
agent's) could both continue one chain from the same segment.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from typing import Protocol

from lifeboat.capture.upload import NotLeading
from lifeboat.clock import Clock
from lifeboat.errors import BackendUnavailable, LifeboatError
from lifeboat.etcd.keys import Key
from lifeboat.etcd.lease import renewed_until
from lifeboat.etcd.txn import Compare, Get, Operation, Put, TxnResult, key_absent
from lifeboat.etcdapi.model import KeyValue, RangePage

log = logging.getLogger("lifeboat.capture")


class LockKV(Protocol):
    """What the lock needs from etcd (``EtcdClient`` and ``MemoryEtcd`` provide it)."""

    def txn(self, compare: Sequence[Compare], success: Sequence[Operation],
            failure: Sequence[Operation] = ()) -> TxnResult: ...

    def get(self, key: Key, *, revision: int = 0) -> KeyValue | None: ...

    def lease_grant(self, ttl: int) -> int: ...

    def lease_keepalive_once(self, lease_id: int, within: float | None = None) -> int: ...

    def lease_revoke(self, lease_id: int) -> None: ...


def lock_key(cluster: str) -> str:
    return f"/lifeboat/{cluster}/capture"


class CaptureLock:
    """This process's claim on its cluster's capture; :meth:`hold` is the fence of every write."""

    def __init__(self, etcd: LockKV, cluster: str, holder: str, ttl: int, clock: Clock, *,
                 keepalive: bool = True) -> None:
        if ttl < 2:
            raise ValueError(f"capture lock TTL {ttl}s is too short; use 2 seconds or more")
        self.etcd = etcd
        self.cluster = cluster
        self.key = lock_key(cluster)
        self.holder = holder
        self.ttl = ttl
        self.clock = clock
        self.lease = 0
        self.lease_until = 0.0  # monotonic: our lease lives at least until then
        self.held = False  # the key is on our lease (as last seen)
        self._lock = threading.RLock()
        self._keepalive = keepalive
        self._renewer: threading.Thread | None = None
        self._done = threading.Event()

    def hold(self) -> bool:
        """True while this process holds the lock, taking it when it is free.

        Raises :class:`NotLeading`, naming the holder, while another capture holds it, and when
        etcd cannot be reached once the lease may have run out (we cannot know it still holds).
        """
        with self._lock:
            if self.held and self.clock.monotonic() < self.lease_until - self.ttl / 3:
                return True
            self.held = False
            try:
                if self.lease and self.renew() and self._ours(self.etcd.get(self.key)):
                    self.held = True
                    return True
                self._take()
            except BackendUnavailable as exc:
                raise NotLeading(f"cannot confirm the capture lock of cluster {self.cluster}: {exc}") from None
            return True

    def acquire(self) -> None:
        """Take the lock now: :class:`NotLeading` naming the holder when another capture has it,
        ``BackendUnavailable`` when etcd cannot be reached (for a command that should not wait)."""
        with self._lock:
            self._take()

    def renew(self) -> bool:
        """Renew our lease once; False (and no lease) when it had expired."""
        with self._lock:
            if not self.lease:
                return False
            until = renewed_until(self.etcd, self.lease, self.ttl, self.clock)
            if until is None:
                if self.held:
                    log.warning("the capture lock's lease %x expired", self.lease,
                                extra={"event": "capture_lock_lost"})
                self.lease = 0
                self.held = False
                return False
            self.lease_until = until
            return True

    def release(self) -> None:
        """Give the lock up now (revoking our lease deletes the key), so another capture may start."""
        self._done.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        with self._lock:
            lease, self.lease = self.lease, 0
            self.held = False
        if lease:
            try:
                self.etcd.lease_revoke(lease)
            except LifeboatError as exc:  # expired already, or etcd unreachable: it expires within a TTL
                log.warning("capture lock not released: %s; it frees itself within %ds", exc, self.ttl)

    def _ours(self, kv: KeyValue | None) -> bool:
        return kv is not None and kv.lease == self.lease

    def _take(self) -> None:
        if not self.lease:
            sent = self.clock.monotonic()
            self.lease = self.etcd.lease_grant(self.ttl)
            self.lease_until = sent + self.ttl
        record = json.dumps({"holder": self.holder, "since": self.clock.now().isoformat()}).encode()
        result = self.etcd.txn([key_absent(self.key)], [Put(self.key, record, self.lease)], [Get(self.key)])
        if result.succeeded:
            log.info("holding the capture lock of cluster %s", self.cluster, extra={"event": "capture_lock_taken"})
        else:  # taken before, by us (a lease that still holds) or by another capture
            page = result.outcomes[0]
            kv = page.kvs[0] if isinstance(page, RangePage) and page.kvs else None
            if not self._ours(kv):
                raise NotLeading(f"another capture of cluster {self.cluster} is running: {describe_holder(kv)} "
                                 f"holds etcd key {self.key}; stop it, or wait for it to end (one killed "
                                 f"without SIGTERM frees it within {self.ttl}s)")
        self.held = True
        self._start_renewer()

    def _start_renewer(self) -> None:
        if not self._keepalive or self._renewer is not None:
            return
        self._done.clear()
        self._renewer = threading.Thread(target=self._renew_while_held, name="capture-lock-renewer", daemon=True)
        self._renewer.start()

    def _renew_while_held(self) -> None:
        while not self._done.wait(self.ttl / 3):
            try:
                self.renew()
            except LifeboatError as exc:  # hold() finds out before the next write
                log.warning("capture lock renewal failed: %s", exc)


def describe_holder(kv: KeyValue | None) -> str:
    """Who holds the lock, from its key's value as lifeboat writes it; a value lifeboat did not
    write is not shown (it could be anything, a secret included)."""
    if kv is None:
        return "a capture that has just stopped"
    try:
        record = json.loads(kv.value)
        holder, since = record["holder"], record["since"]
    except (ValueError, KeyError, TypeError):
        holder = since = None
    # Strings on one line, as lifeboat writes them: a line break would forge a log line.
    if isinstance(holder, str) and isinstance(since, str) and holder.isprintable() and since.isprintable():
        return f"{holder[:200]} (since {since[:40]})"
    return f"a holder lifeboat did not write ({len(kv.value)} bytes, not shown)"

"""An in-memory etcd cluster for unit tests: MVCC keys, transactions, leases, watches, members.

It honours the contract of :mod:`lifeboat.etcd.seam` the way etcd does (facts from etcd's
v3 API documentation and its mvcc package):

* The store starts at revision 1. Every Put, every DeleteRange that deletes something and
  every txn that writes is one new main revision; its operations are its sub revisions,
  and watchers see their events in that order.
* Reads at a revision see the keys as they were then; one older than the last compaction
  raises :class:`RevisionCompacted`, one newer than the store raises ``OperationFailed``.
* A watch from a revision older than the last compaction is refused with
  :class:`RevisionCompacted` when iteration reaches it, as is a watcher that fell behind a
  compaction. A watch from revision 0 starts after the current revision.
* Leases expire on the :class:`~lifeboat.clock.Clock` given; an expiry or a revoke deletes
  the lease's keys in one revision (watchers see the deletions, never the lease itself).
* Members: a quorum of voting members must be up for keys, leases and membership changes
  (else ``EtcdUnavailable``, as etcd without a leader); the leader is the lowest-id voter up.
  A learner is promoted only once its applied index reached the leader's. Right after a
  leader fails, followers still name it in Status until an election ends (set
  :attr:`MemberState.names_leader` to play that). A removed member's process keeps answering
  Status as itself until it is stopped: etcd shuts a removed member down only once it learns
  of its removal.

Failures are injected with :meth:`MemoryEtcd.inject` (a :class:`Fault` fires once), or by
taking members down with :meth:`MemoryEtcd.stop`.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from lifeboat.clock import Clock, SystemClock
from lifeboat.errors import EtcdUnavailable, LifeboatError, OperationFailed
from lifeboat.etcd.failures import RevisionCompacted
from lifeboat.etcd.keys import Key, as_bytes, in_range, key_range
from lifeboat.etcd.seam import KeyValueReads
from lifeboat.etcd.txn import Compare, Delete, Deleted, Get, Operation, Put, Target, TxnResult, Written
from lifeboat.etcdapi.model import Alarm, AlarmType, EventType, KeyValue, LeaseTimeToLive, Member
from lifeboat.etcdapi.model import MemberList, MemberStatus, RangePage, ReceivedEvents, WatchEvent

OPERATIONS = (
    "status", "member_list", "alarms", "member_add", "member_remove", "member_promote",
    "range", "put", "delete_range", "txn", "compact", "watch",
    "lease_grant", "lease_keepalive_once", "lease_revoke", "lease_time_to_live",
)


@dataclass
class Fault:
    """One injected failure of ``operation``: raised once, after ``after_calls`` calls succeeded."""

    operation: str
    error: LifeboatError = field(default_factory=lambda: EtcdUnavailable("memory etcd: injected fault"))
    after_calls: int = 0

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(f"unknown operation {self.operation!r}; one of {OPERATIONS}")


@dataclass
class MemberState:
    """One member of the double: what MemberList says, whether it runs, what Status reports."""

    member: Member
    up: bool = True
    applied: int = 100
    applied_at: float = 0.0  # when ``applied`` was last brought forward (the clock's monotonic)
    version: str = "3.5.1"
    db_size: int = 1 << 20
    errors: tuple[str, ...] = ()
    names_leader: int | None = None  # the leader Status names while an election is under way; None: the real one


@dataclass(frozen=True)
class _Change:
    revision: int
    sub: int
    event: WatchEvent


@dataclass
class _Lease:
    ttl: int
    expires: float
    keys: set[bytes] = field(default_factory=set)


def member_urls(index: int) -> tuple[str, str]:
    """The client and peer URL of the double's member ``index`` (reserved .invalid names)."""
    return f"http://m{index}.etcd.invalid:2379", f"http://m{index}.etcd.invalid:2380"


class MemoryEtcd(KeyValueReads):
    """An etcd cluster, keys empty, at revision 1, every member up.

    ``members`` is a count (members ``m1``... at :func:`member_urls`) or the members
    themselves. A member started after being added applies ``catch_up_rate`` raft entries
    per second of the clock until it reaches the leader.
    """

    def __init__(self, clock: Clock | None = None, members: int | Sequence[Member] = 1,
                 cluster_id: int = 0xC1, catch_up_rate: float = 1e9) -> None:
        self.clock: Clock = clock or SystemClock()
        self.cluster_id = cluster_id
        self.catch_up_rate = catch_up_rate
        if isinstance(members, int):
            members = [Member(i, f"m{i}", (member_urls(i)[1],), (member_urls(i)[0],), False)
                       for i in range(1, members + 1)]
        self.members: dict[int, MemberState] = {m.id: MemberState(m) for m in members}
        self.removed: dict[int, MemberState] = {}
        self.raised: list[Alarm] = []
        self.calls: Counter[str] = Counter()
        self.revision = 1
        self.compacted = 0
        self._versions: dict[bytes, list[tuple[int, KeyValue | None]]] = {}
        self._history: list[_Change] = []
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(0x694D_0001)
        self._member_ids = itertools.count(0x1000)
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)

    # ---- the double's own controls ----

    def inject(self, fault: Fault) -> None:
        """Arm ``fault``; several may be armed at once."""
        with self._lock:
            self._faults.append(fault)

    def stop(self, member_id: int) -> None:
        """The member's process stops: it no longer answers."""
        with self._lock:
            (self.members.get(member_id) or self.removed[member_id]).up = False

    def start(self, member_id: int, name: str | None = None, client_url: str | None = None) -> None:
        """The member's process (re)starts, with the name and client URL it announces."""
        with self._lock:
            state = self.members[member_id]
            announced = replace(state.member, name=name or state.member.name,
                                client_urls=(client_url,) if client_url else state.member.client_urls)
            state.member, state.up, state.applied_at = announced, True, self.clock.monotonic()

    def raise_alarm(self, member_id: int, kind: AlarmType) -> None:
        with self._lock:
            self.raised.append(Alarm(member_id, kind))

    def _enter(self, operation: str, *, quorum: bool = True) -> None:
        """Count the call, fire a fault due now, expire leases, and check for a leader."""
        self.calls[operation] += 1
        for fault in self._faults:
            if fault.operation == operation:
                if fault.after_calls == 0:
                    self._faults.remove(fault)
                    raise fault.error
                fault.after_calls -= 1
        if quorum and self._leader() == 0:
            raise EtcdUnavailable(f"{operation}: no etcd endpoint answered (etcdserver: no leader)")
        self._expire_leases()
        self._catch_up()

    def _catch_up(self) -> None:
        leader = self.members.get(self._leader())
        now = self.clock.monotonic()
        for state in self.members.values():
            if leader is not None and state.up and state.applied < leader.applied:
                gained = int(self.catch_up_rate * (now - state.applied_at))
                state.applied = min(state.applied + gained, leader.applied)
            state.applied_at = now

    # ---- membership ----

    def _voters(self) -> list[MemberState]:
        return [s for s in self.members.values() if not s.member.is_learner]

    def _leader(self) -> int:
        voters = self._voters()
        up = sorted(s.member.id for s in voters if s.up)
        return up[0] if len(up) > len(voters) // 2 else 0

    def _any_up(self, what: str) -> MemberState:
        for state in self.members.values():
            if state.up:
                return state
        raise EtcdUnavailable(f"{what}: no etcd endpoint answered; every member is down")

    def status(self, endpoint: str) -> MemberStatus:
        with self._lock:
            self._enter("status", quorum=False)
            for state in itertools.chain(self.members.values(), self.removed.values()):
                if endpoint in state.member.client_urls and state.up:
                    leader = self._leader() if state.names_leader is None else state.names_leader
                    return MemberStatus(
                        endpoint=endpoint, member_id=state.member.id, cluster_id=self.cluster_id,
                        version=state.version, db_size=state.db_size, db_size_in_use=state.db_size // 2,
                        leader_id=leader, raft_index=state.applied, raft_term=2,
                        raft_applied_index=state.applied, is_learner=state.member.is_learner,
                        errors=state.errors, revision=self.revision,
                    )
            raise EtcdUnavailable(f"status of {endpoint}: no etcd endpoint answered; tried {endpoint}")

    def member_list(self) -> MemberList:
        with self._lock:
            self._enter("member_list", quorum=False)
            answering = self._any_up("member list")
            return MemberList(self.cluster_id, tuple(s.member for s in self.members.values()),
                              answering.member.id)

    def alarms(self) -> list[Alarm]:
        with self._lock:
            self._enter("alarms", quorum=False)
            self._any_up("alarm list")
            return list(self.raised)

    def member_add(self, peer_urls: Sequence[str], *, learner: bool = False) -> Member:
        with self._lock:
            self._enter("member_add")
            taken = {url for state in self.members.values() for url in state.member.peer_urls}
            if taken & set(peer_urls):
                raise OperationFailed("member add failed on etcd at memory: FAILED_PRECONDITION: "
                                      "etcdserver: Peer URLs already exists")
            member = Member(next(self._member_ids), "", tuple(peer_urls), (), learner)
            self.members[member.id] = MemberState(member, up=False, applied=0)
            return member

    def member_remove(self, member_id: int) -> tuple[Member, ...]:
        with self._lock:
            self._enter("member_remove")
            if member_id not in self.members:
                raise OperationFailed(f"member remove {member_id:x} failed on etcd at memory: NOT_FOUND: "
                                      "etcdserver: member not found")
            self.removed[member_id] = self.members.pop(member_id)
            return tuple(s.member for s in self.members.values())

    def member_promote(self, member_id: int) -> tuple[Member, ...]:
        with self._lock:
            self._enter("member_promote")
            state = self.members.get(member_id)
            if state is None:
                raise OperationFailed(f"member promote {member_id:x} failed on etcd at memory: NOT_FOUND: "
                                      "etcdserver: member not found")
            if not state.member.is_learner:
                raise OperationFailed("member promote failed: etcdserver: can only promote a learner member")
            if not state.up or state.applied < self.members[self._leader()].applied:
                raise OperationFailed("member promote failed: etcdserver: can only promote a learner "
                                      "member which is in sync with leader")
            state.member = replace(state.member, is_learner=False)
            return tuple(s.member for s in self.members.values())

    # ---- keys ----

    def _at(self, key: bytes, revision: int) -> KeyValue | None:
        versions = self._versions.get(key, [])
        at = bisect.bisect_right(versions, revision, key=lambda v: v[0])
        return versions[at - 1][1] if at else None

    def _live(self, start: bytes, end: bytes, revision: int) -> list[KeyValue]:
        found = (self._at(k, revision) for k in sorted(self._versions) if in_range(k, start, end))
        return [kv for kv in found if kv is not None]

    def _check_revision(self, what: str, revision: int) -> int:
        if revision and revision < self.compacted:
            raise RevisionCompacted(f"{what}: etcdserver: mvcc: required revision has been compacted "
                                    f"(oldest kept: {self.compacted})")
        if revision > self.revision:
            raise OperationFailed(f"{what} failed: etcdserver: mvcc: required revision is a future revision")
        return revision or self.revision

    def range(
        self, key: Key, range_end: Key | None = None, *, prefix: bool = False, revision: int = 0,
        limit: int = 0, keys_only: bool = False, serializable: bool = False,
    ) -> RangePage:
        with self._lock:
            self._enter("range")
            return self._range(*key_range(key, range_end, prefix), revision, limit, keys_only)

    def _range(self, start: bytes, end: bytes, revision: int, limit: int, keys_only: bool) -> RangePage:
        at = self._check_revision("range", revision)
        kvs = self._live(start, end, at)
        shown = kvs[:limit] if limit else kvs
        if keys_only:
            shown = [replace(kv, value=b"") for kv in shown]
        return RangePage(tuple(shown), bool(limit) and len(kvs) > limit, len(kvs), self.revision)

    def put(self, key: Key, value: bytes, lease: int = 0) -> int:
        with self._lock:
            self._enter("put")
            return self.txn_locked([], [Put(key, value, lease)], []).revision

    def delete_range(self, key: Key, range_end: Key | None = None, *, prefix: bool = False) -> int:
        with self._lock:
            self._enter("delete_range")
            start, end = key_range(key, range_end, prefix)
            outcome = self.txn_locked([], [Delete(start, end)], []).outcomes[0]
            assert isinstance(outcome, Deleted)
            return outcome.count

    def txn(
        self, compare: Sequence[Compare], success: Sequence[Operation], failure: Sequence[Operation] = (),
    ) -> TxnResult:
        with self._lock:
            self._enter("txn")
            return self.txn_locked(compare, success, failure)

    def txn_locked(
        self, compare: Sequence[Compare], success: Sequence[Operation], failure: Sequence[Operation],
    ) -> TxnResult:
        """One transaction at one new revision (none when it writes nothing); the lock is held."""
        ok = all(self._holds(c) for c in compare)
        ops = success if ok else failure
        for op in ops:
            if isinstance(op, Put) and op.lease and op.lease not in self._leases:
                raise OperationFailed("put failed on etcd at memory: NOT_FOUND: etcdserver: requested lease not found")
        revision = self.revision + 1
        changes: list[WatchEvent] = []
        outcomes: list[Written | Deleted | RangePage] = []
        for op in ops:
            if isinstance(op, Put):
                changes.append(self._write(as_bytes(op.key), op.value, op.lease, revision))
                outcomes.append(Written(revision))
            elif isinstance(op, Delete):
                # Reads at the new revision see the writes of this txn's earlier operations.
                live = self._live(as_bytes(op.key), as_bytes(op.range_end or b""), revision)
                gone = [self._delete(kv, revision) for kv in live]
                changes.extend(gone)
                outcomes.append(Deleted(len(gone)))
            else:
                kvs = self._live(as_bytes(op.key), as_bytes(op.range_end or b""), revision)
                shown = kvs[:op.limit] if op.limit else kvs
                if op.keys_only:
                    shown = [replace(kv, value=b"") for kv in shown]
                outcomes.append(RangePage(tuple(shown), bool(op.limit) and len(kvs) > op.limit, len(kvs),
                                          self.revision))
        if changes:
            self._commit(revision, changes)
        return TxnResult(ok, self.revision, tuple(outcomes))

    def _holds(self, cmp: Compare) -> bool:
        kv = self._at(as_bytes(cmp.key), self.revision)
        have: int | bytes
        if cmp.target is Target.VALUE:
            have = kv.value if kv else b""
        elif kv is None:
            have = 0
        else:
            have = {Target.VERSION: kv.version, Target.CREATE_REVISION: kv.create_revision,
                    Target.MOD_REVISION: kv.mod_revision, Target.LEASE: kv.lease}[cmp.target]
        want = cmp.operand
        if cmp.op == "==":
            return have == want
        if cmp.op == "!=":
            return have != want
        if type(have) is not type(want):
            raise TypeError(f"cannot compare {cmp.target.name} with {want!r}")
        return have < want if cmp.op == "<" else have > want  # type: ignore[operator]

    def _write(self, key: bytes, value: bytes, lease: int, revision: int) -> WatchEvent:
        old = self._at(key, revision)
        kv = KeyValue(key, value, old.create_revision if old else revision, revision,
                      (old.version if old else 0) + 1, lease)
        if old is not None and old.lease and old.lease in self._leases:
            self._leases[old.lease].keys.discard(key)
        if lease:
            self._leases[lease].keys.add(key)
        self._record(key, revision, kv)
        return WatchEvent(EventType.PUT, kv, old)

    def _delete(self, old: KeyValue, revision: int) -> WatchEvent:
        if old.lease and old.lease in self._leases:
            self._leases[old.lease].keys.discard(old.key)
        self._record(old.key, revision, None)
        return WatchEvent(EventType.DELETE, KeyValue(old.key, b"", 0, revision, 0, 0), old)

    def _record(self, key: bytes, revision: int, kv: KeyValue | None) -> None:
        versions = self._versions.setdefault(key, [])
        if versions and versions[-1][0] == revision:
            versions[-1] = (revision, kv)  # a second write of the key in one txn
        else:
            versions.append((revision, kv))

    def _commit(self, revision: int, events: list[WatchEvent]) -> None:
        self.revision = revision
        self._history.extend(_Change(revision, sub, event) for sub, event in enumerate(events))
        self._changed.notify_all()

    def compact(self, revision: int, *, physical: bool = False) -> None:
        with self._lock:
            self._enter("compact")
            if revision <= self.compacted:
                raise RevisionCompacted(f"compact: etcdserver: mvcc: required revision has been compacted "
                                        f"(oldest kept: {self.compacted})")
            self._check_revision("compact", revision)
            self.compacted = revision
            for key, versions in list(self._versions.items()):
                at = bisect.bisect_right(versions, revision, key=lambda v: v[0])
                kept = versions[at - 1:] if at and versions[at - 1][1] is not None else versions[at:]
                if kept:
                    self._versions[key] = kept
                else:
                    del self._versions[key]
            self._history = [c for c in self._history if c.revision >= revision]
            self._changed.notify_all()

    # ---- watches ----

    def watch(
        self, key: Key, range_end: Key | None = None, *, prefix: bool = False,
        start_revision: int = 0, prev_kv: bool = False,
    ) -> MemoryWatch:
        with self._lock:
            self._enter("watch")
            start, end = key_range(key, range_end, prefix)
            return MemoryWatch(self, start, end, start_revision or self.revision + 1, prev_kv)

    def follow(self, start_revision: int, *, lag: float = 0.0) -> MemoryFeed:
        """As the client's; ``lag`` is taken and not acted on: the double has no puts whose
        latency a synced watcher would cost, so it hands every event over as it is written."""
        return MemoryFeed(self.watch(b"", prefix=True, start_revision=start_revision))

    def _events_from(self, watch: MemoryWatch) -> list[WatchEvent]:
        """The events ``watch`` has not seen yet; RevisionCompacted once its next one is gone."""
        if watch.next_revision < self.compacted:
            raise RevisionCompacted(
                f"watch: etcd compacted past the start revision (oldest kept: {self.compacted}); "
                "watch from a newer revision"
            )
        at = bisect.bisect_left(self._history, watch.next_revision, key=lambda c: c.revision)
        changes = self._history[at:]
        if changes:
            watch.next_revision = changes[-1].revision + 1
        return [c.event if watch.prev_kv else replace(c.event, prev_kv=None)
                for c in changes if in_range(c.event.kv.key, watch.start, watch.end)]

    # ---- leases ----

    def _expire_leases(self) -> None:
        now = self.clock.monotonic()
        for lease_id, lease in list(self._leases.items()):
            if lease.expires <= now:
                self._revoke(lease_id)

    def _revoke(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id)
        revision = self.revision + 1
        gone = [self._delete(kv, revision) for kv in
                (self._at(key, self.revision) for key in sorted(lease.keys)) if kv is not None]
        if gone:
            self._commit(revision, gone)

    def lease_grant(self, ttl: int) -> int:
        with self._lock:
            self._enter("lease_grant")
            lease_id = next(self._lease_ids)
            self._leases[lease_id] = _Lease(ttl, self.clock.monotonic() + ttl)
            return lease_id

    def lease_keepalive_once(self, lease_id: int, within: float | None = None) -> int:
        with self._lock:
            self._enter("lease_keepalive_once")
            lease = self._leases.get(lease_id)
            if lease is None:
                return 0
            lease.expires = self.clock.monotonic() + lease.ttl
            return lease.ttl

    def lease_revoke(self, lease_id: int) -> None:
        with self._lock:
            self._enter("lease_revoke")
            if lease_id not in self._leases:
                raise OperationFailed("lease revoke failed on etcd at memory: NOT_FOUND: "
                                      "etcdserver: requested lease not found")
            self._revoke(lease_id)

    def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseTimeToLive:
        with self._lock:
            self._enter("lease_time_to_live")
            lease = self._leases.get(lease_id)
            if lease is None:
                return LeaseTimeToLive(lease_id, -1, 0, ())
            left = max(int(lease.expires - self.clock.monotonic()), 0)
            return LeaseTimeToLive(lease_id, left, lease.ttl, tuple(sorted(lease.keys)) if keys else ())


class MemoryWatch:
    """A watcher on a :class:`MemoryEtcd`, with the same behaviour as a live WatchStream."""

    def __init__(self, etcd: MemoryEtcd, start: bytes, end: bytes, start_revision: int, prev_kv: bool) -> None:
        self.endpoint = "memory"
        self.revision = etcd.revision
        self.start, self.end, self.prev_kv = start, end, prev_kv
        self.next_revision = start_revision
        self._etcd = etcd
        self._pending: list[WatchEvent] = []
        self._closed = False
        self.progress_revision: int | None = None

    @property
    def ended(self) -> bool:
        return self._closed

    def next_batch(self, timeout: float | None = None) -> list[WatchEvent] | None:
        """The events of the next revision (as a live watch delivers a transaction whole)."""
        first = self.next_event(timeout)
        if first is None:
            return None
        batch = [first]
        with self._etcd._changed:
            while self._pending and self._pending[0].kv.mod_revision == first.kv.mod_revision:
                batch.append(self._pending.pop(0))
        return batch

    def request_progress(self) -> None:
        """Like etcd's progress request: vouch for the store revision once nothing is pending."""
        with self._etcd._changed:
            if not self._pending and self.next_revision > self._etcd.revision:
                self.progress_revision = self._etcd.revision

    def next_event(self, timeout: float | None = None) -> WatchEvent | None:
        """The next event, or None when none came within ``timeout`` (real seconds) or it was closed."""
        # Real time, not the double's clock: events come from other threads, as a stream's do.
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._etcd._changed:
            while not self._pending and not self._closed:
                try:
                    self._pending.extend(self._etcd._events_from(self))
                except RevisionCompacted:
                    self._closed = True
                    raise
                left = None if deadline is None else deadline - time.monotonic()
                if self._pending or (left is not None and left <= 0):
                    break
                self._etcd._changed.wait(left)
            return self._pending.pop(0) if self._pending else None

    def __iter__(self) -> Iterator[WatchEvent]:
        while (event := self.next_event()) is not None:
            yield event

    def close(self) -> None:
        """Cancel the watch; iteration ends once buffered events are consumed."""
        with self._etcd._changed:
            self._closed = True
            self._etcd._changed.notify_all()

    def __enter__(self) -> MemoryWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MemoryFeed:
    """A :class:`MemoryWatch` taken in arrival-stamped batches, as a live WatchFeed is."""

    def __init__(self, watch: MemoryWatch) -> None:
        self._watch = watch
        self._clock = watch._etcd.clock
        self.revision = watch.revision

    @property
    def ended(self) -> bool:
        return self._watch.ended

    def take(self, timeout: float | None = None) -> list[ReceivedEvents]:
        taken: list[ReceivedEvents] = []
        while (batch := self._watch.next_batch(0 if taken else timeout)) is not None:
            # Stamped on the double's clock, as the live feed stamps arrivals on its client's clock.
            taken.append(ReceivedEvents(self._clock.now().timestamp(), tuple(batch)))
        return taken

    def hurry(self) -> int:
        return 0  # every event is handed over as it is written: nothing to ask for

    def passed(self, ticket: int) -> bool:
        return True

    def close(self) -> None:
        self._watch.close()


if TYPE_CHECKING:  # both sides of the seam offer the whole of it
    from lifeboat.etcd.client import EtcdClient
    from lifeboat.etcd.seam import Etcd

    def _offers_the_seam(double: MemoryEtcd, client: EtcdClient) -> tuple[Etcd, Etcd]:
        return double, client

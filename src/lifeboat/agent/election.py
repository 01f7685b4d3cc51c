"""Exactly one active agent per cluster: an etcd lease plus a compare-and-create.

Keys, all under ``/lifeboat/<cluster>/``:

* ``leader`` — the active agent's id, attached to its lease. Created only when absent
  (``create_revision == 0``), so two agents can never both create it. etcd deletes a
  key when the lease it is attached to expires or is revoked (etcd docs, "Lease"), so
  when the leader dies the key is gone within one TTL and a follower's next attempt
  succeeds.
* ``config/<agent-id>`` — a hash of that agent's effective configuration, on the same
  lease, so agents with different configurations for one cluster can be reported.
* ``ticks/<job>`` — the last schedule tick run, written only while leading (guarded by
  a compare on ``leader``), read by every agent; see :mod:`lifeboat.agent.schedule`.

Every agent holds a lease and renews it each cycle; losing it (the renewal reports TTL 0,
e.g. after the process was paused longer than the TTL) means a new lease and, if it was
leading, the end of its leadership.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from pydantic import AwareDatetime, ConfigDict, TypeAdapter, ValidationError, with_config
from pydantic.dataclasses import dataclass
from typing_extensions import TypedDict  # pydantic validates only this one on Python < 3.12

from lifeboat.clock import Clock
from lifeboat.errors import BackendUnavailable
from lifeboat.etcd.keys import Key
from lifeboat.etcd.lease import renewed_until
from lifeboat.etcdapi.model import KeyValue, RangePage
from lifeboat.etcd.txn import Compare, Get, Operation, Put, Target, TxnResult, key_absent

log = logging.getLogger("lifeboat.agent")

# What a leader key's value is shown as in the log when it is a plain name (a host or node
# name, as agent ids are by default): anything else could be anything, even a secret.
_PLAIN_NAME = re.compile(rb"[A-Za-z0-9._:@-]{1,253}")


def shown_holder(value: bytes) -> str:
    """The leader key's value as the log shows it: a plain name as it is, anything else (a
    value another program wrote, a line break that would forge a log line) by its size only."""
    if _PLAIN_NAME.fullmatch(value):
        return value.decode()
    return f"a holder whose id is not a plain name ({len(value)} bytes, not shown)"


class LeaseKV(Protocol):
    """What the election needs from etcd (``EtcdClient`` provides it)."""

    def txn(self, compare: Sequence[Compare], success: Sequence[Operation],
            failure: Sequence[Operation] = ()) -> TxnResult: ...

    def get(self, key: Key, *, revision: int = 0) -> KeyValue | None: ...

    def range_all(self, key: Key, range_end: Key | None = None, *,
                  prefix: bool = False) -> Iterable[KeyValue]: ...

    def lease_grant(self, ttl: int) -> int: ...

    def lease_keepalive_once(self, lease_id: int, within: float | None = None) -> int: ...

    def lease_revoke(self, lease_id: int) -> None: ...


@with_config(ConfigDict(strict=True, extra="forbid"))
class TickOutcome(TypedDict, total=False):
    """What a tick produced: a backup's id, duration (s), size and revision; a drill's verdict."""

    backup_id: str
    duration: float
    size: int
    revision: int
    passed: bool


@dataclass(frozen=True, config=ConfigDict(strict=True, extra="forbid"))
class TickRecord:
    """The last tick of a job that ran to the end, and what it produced (one strict schema)."""

    tick: AwareDatetime
    finished_at: AwareDatetime
    agent: str
    outcome: TickOutcome

    def to_json(self) -> bytes:
        return json.dumps({
            "tick": self.tick.isoformat(), "finished_at": self.finished_at.isoformat(),
            "agent": self.agent, "outcome": self.outcome,
        }, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> TickRecord | None:
        """The record, or None when it is unreadable or off-schema (it is then treated as absent)."""
        try:
            return _TICK_RECORD.validate_json(data)
        except ValidationError:
            return None


_TICK_RECORD = TypeAdapter(TickRecord)


class Election:
    """One agent's side of the election for one cluster (its methods may be called from several threads)."""

    def __init__(self, etcd: LeaseKV, cluster: str, agent_id: str, ttl: int, config_hash: str,
                 clock: Clock) -> None:
        self.etcd = etcd
        self.clock = clock
        # Our lease lives at least until then: a renewal sent at t resets it to a full TTL
        # when etcd's leader applies it, after t (etcd docs, "Lease"); no other agent can
        # take the leader key before it expires.
        self.lease_until = 0.0
        self._lock = threading.RLock()
        self.agent_id = agent_id
        self.ttl = ttl
        self.config_hash = config_hash
        self.prefix = f"/lifeboat/{cluster}/"
        self.leader_key = self.prefix + "leader"
        self.lease = 0
        self.leading = False
        # Told each gain and loss of leadership as it is logged, from whichever thread noticed
        # it (a cycle, the lease renewer, a capture write's check): the agent's metric.
        self.on_change: Callable[[bool], None] = lambda leading: None

    def config_key(self, agent_id: str) -> str:
        return f"{self.prefix}config/{agent_id}"

    def tick_key(self, job: str) -> str:
        return f"{self.prefix}ticks/{job}"

    def refresh(self) -> bool:
        """Renew our lease and take or confirm leadership; True while we lead.

        Raises BackendUnavailable when etcd cannot be reached; leadership is then
        reported lost, since we cannot know whether our lease still holds.
        """
        with self._lock:
            try:
                return self._refresh()
            except BackendUnavailable:
                self._lose("etcd unreachable")
                raise

    def renew(self) -> bool:
        """Renew our lease once; False (and no lease) when it had expired."""
        with self._lock:
            if not self.lease:
                return False
            until = renewed_until(self.etcd, self.lease, self.ttl, self.clock)
            if until is None:
                log.warning("lease %x expired", self.lease, extra={"event": "lease_expired"})
                self.lease = 0
                self._lose("our lease expired")
                return False
            self.lease_until = until
            return True

    def renewal_failed(self, why: str) -> None:
        """A renewal could not reach etcd: once past our lease's end (etcd may have expired it
        and another agent may lead), the lead is lost and logged as such, not only a warning
        per failed renewal while a long job goes on."""
        with self._lock:
            if self.leading and self.clock.monotonic() >= self.lease_until:
                self._lose(f"etcd unreachable past our lease's end ({why})")

    def _refresh(self) -> bool:
        if self.lease:
            self.renew()
        if not self.lease:
            sent = self.clock.monotonic()
            self.lease = self.etcd.lease_grant(self.ttl)
            self.lease_until = sent + self.ttl
            self.etcd.txn([], [Put(self.config_key(self.agent_id), self.config_hash.encode(), self.lease)])
        result = self.etcd.txn(
            [key_absent(self.leader_key)],
            [Put(self.leader_key, self.agent_id.encode(), self.lease)],
            [Get(self.leader_key)],
        )
        ours = result.succeeded
        holder: str | None = self.agent_id
        if not result.succeeded:
            page = result.outcomes[0]
            kv = page.kvs[0] if isinstance(page, RangePage) and page.kvs else None
            # Same id is not enough: a restarted agent's old lease may still hold the key.
            ours = kv is not None and kv.lease == self.lease and kv.value == self.agent_id.encode()
            holder = shown_holder(kv.value) if kv is not None else None
        if ours and not self.leading:
            log.info("became the active agent", extra={"event": "leader_acquired"})
            self.leading = True
            self.on_change(True)
        if not ours and self.leading:
            self._lose(f"leader key now held by {holder}")
        return self.leading

    def _lose(self, why: str) -> None:
        if self.leading:
            log.warning("lost leadership: %s", why, extra={"event": "leader_lost"})
            self.leading = False
            self.on_change(False)

    def confirm(self) -> bool:
        """Re-check leadership right now (a renewal and a read), for use before a commit.

        A successful renewal means the lease, and so the leader key, lives at least one
        more TTL: no other agent can lead before then.
        """
        with self._lock:
            if not self.leading or not self.lease:
                return False
            try:
                if not self.renew():
                    return False
                kv = self.etcd.get(self.leader_key)
            except BackendUnavailable:
                self._lose("etcd unreachable")
                return False
            if kv is None or kv.lease != self.lease or kv.value != self.agent_id.encode():
                self._lose("the leader key is no longer ours")
                return False
            return True

    def still_leads(self) -> bool:
        """Whether we lead, checked before each write only the leader may make (a capture segment).

        No round trip while our lease is known to outlive the write by a third of its TTL;
        otherwise (the process was paused, the agent loop is late) :meth:`confirm` asks etcd.
        An agent paused past its TTL thus finds out before it writes, not after.
        """
        with self._lock:
            if self.leading and self.lease and self.clock.monotonic() < self.lease_until - self.ttl / 3:
                return True
        return self.confirm()

    def guard(self) -> list[Compare]:
        """Compares that hold only while we lead, for writes only the leader may make."""
        return [
            Compare(self.leader_key, Target.VALUE, "==", self.agent_id.encode()),
            Compare(self.leader_key, Target.LEASE, "==", self.lease),
        ]

    def record_tick(self, job: str, record: TickRecord) -> bool:
        """Record a finished tick, only if we still lead; True when written."""
        return self.etcd.txn(self.guard(), [Put(self.tick_key(job), record.to_json())]).succeeded

    def last_tick(self, job: str) -> TickRecord | None:
        kv = self.etcd.get(self.tick_key(job))
        return TickRecord.from_json(kv.value) if kv is not None else None

    def config_conflicts(self) -> dict[str, str]:
        """Agents of this cluster whose configuration hash differs from ours: id → hash."""
        kvs = self.etcd.range_all(self.prefix + "config/", prefix=True)
        start = len((self.prefix + "config/").encode())
        others = {kv.key[start:].decode(errors="replace"): kv.value.decode(errors="replace") for kv in kvs}
        return {agent: h for agent, h in others.items() if h != self.config_hash}

    def resign(self) -> None:
        """Give up leadership and drop our keys now, so another agent takes over at once."""
        with self._lock:
            lease, self.lease = self.lease, 0
            if self.leading:
                self.leading = False
                self.on_change(False)
        if lease:
            self.etcd.lease_revoke(lease)

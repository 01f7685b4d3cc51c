"""How long a lease this process holds surely lives, from one renewal.

A renewal sent at monotonic time t resets the lease to a full TTL when etcd's leader applies
it, after t (etcd docs, "Lease"): the lease lives at least until t + the TTL etcd answers.
The agent's election and capture's lock both decide from that whether a write needs a round
trip first.
"""

from __future__ import annotations

from typing import Protocol

from lifeboat.clock import Clock


class Renewable(Protocol):
    def lease_keepalive_once(self, lease_id: int, within: float | None = None) -> int: ...


def renewed_until(etcd: Renewable, lease_id: int, ttl: int, clock: Clock) -> float | None:
    """Renew ``lease_id`` (of ``ttl`` seconds) once: the monotonic time it surely lives until,
    or None when it had expired.

    Each member gets a third of the TTL to answer, not the whole command timeout: renewals
    come every third of it, so a member that hangs (SIGSTOP, a stalled disk, packets dropped)
    costs one third and the next member renews while the lease still holds, where waiting
    10 s on it let a lease of 15 s or less run out.
    """
    sent = clock.monotonic()
    left = etcd.lease_keepalive_once(lease_id, within=ttl / 3)
    return sent + left if left > 0 else None

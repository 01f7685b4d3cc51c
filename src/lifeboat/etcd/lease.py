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
    def lease_keepalive_once(self, lease_id: int) -> int: ...


def renewed_until(etcd: Renewable, lease_id: int, clock: Clock) -> float | None:
    """Renew ``lease_id`` once: the monotonic time it surely lives until, or None when it had expired."""
    sent = clock.monotonic()
    left = etcd.lease_keepalive_once(lease_id)
    return sent + left if left > 0 else None

"""Writing many keys into a real etcd quickly, for tests and benchmarks."""

from __future__ import annotations

import random

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from lifeboat.etcd import EtcdClient, Put

# etcd's defaults: --max-txn-ops 128 operations, --max-request-bytes 1.5 MiB per request.
MAX_TXN_OPS = 128
MAX_TXN_BYTES = 1_400_000


def _batches(items: Iterable[tuple[bytes, bytes]], ops: int, limit: int) -> Iterator[list[Put]]:
    batch: list[Put] = []
    size = 0
    for key, value in items:
        cost = len(key) + len(value) + 16
        if batch and (len(batch) >= ops or size + cost > limit):
            yield batch
            batch, size = [], 0
        batch.append(Put(key, value))
        size += cost
    if batch:
        yield batch


def load_keys(
    client: EtcdClient, items: Iterable[tuple[bytes, bytes]], *,
    ops_per_txn: int = MAX_TXN_OPS, workers: int = 4,
) -> int:
    """Write ``items`` in transactions of up to ``ops_per_txn`` puts, ``workers`` at a time.

    Keys must be distinct within the whole load (etcd refuses a txn that writes one key
    twice). Returns the number of keys written.
    """
    written = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = []
        for batch in _batches(items, ops_per_txn, MAX_TXN_BYTES):
            pending.append((len(batch), pool.submit(client.txn, [], batch)))
            if len(pending) >= workers * 2:
                count, future = pending.pop(0)
                future.result()
                written += count
        for count, future in pending:
            future.result()
            written += count
    return written


def numbered(prefix: str, count: int, value_size: int, seed: int = 0) -> Iterator[tuple[bytes, bytes]]:
    """``count`` keys ``<prefix>00000000``... with pseudo-random values of ``value_size`` bytes."""
    rng = random.Random(seed)
    for i in range(count):
        yield f"{prefix}{i:08d}".encode(), rng.randbytes(value_size)

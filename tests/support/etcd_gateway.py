"""Writing to a real etcd through its JSON gRPC gateway (``/v3/...``), for snapshot fixtures.

The gateway ships in etcd 3.4 and 3.5 on the client URL; bytes travel base64-encoded. It
needs nothing but the standard library, so fixtures and benchmarks do not depend on
lifeboat's own etcd client.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterable, Iterator
from typing import Any

# etcd's defaults: --max-txn-ops 128, --max-request-bytes 1.5 MiB (base64 grows data by 4/3).
MAX_TXN_OPS = 128
MAX_TXN_RAW_BYTES = 1_000_000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Gateway:
    """One keep-alive HTTP connection to a member's client port (plain http only)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def close(self) -> None:
        self.conn.close()

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"etcd gateway {path} answered {response.status}: {data[:300]!r}")
        result: dict[str, Any] = json.loads(data)
        return result

    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return int(self.call("/v3/kv/put", body)["header"]["revision"])

    def put_many(self, items: Iterable[tuple[bytes, bytes]], lease: int = 0) -> int:
        """Write in transactions of up to 128 puts; keys must be distinct per batch."""
        revision = 0
        for batch in _batches(items):
            ops = []
            for key, value in batch:
                put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
                if lease:
                    put["lease"] = str(lease)
                ops.append({"requestPut": put})
            revision = int(self.call("/v3/kv/txn", {"success": ops})["header"]["revision"])
        return revision

    def delete(self, key: bytes, prefix_end: bytes | None = None) -> int:
        body = {"key": _b64(key)}
        if prefix_end is not None:
            body["range_end"] = _b64(prefix_end)
        return int(self.call("/v3/kv/deleterange", body)["header"]["revision"])

    def compact(self, revision: int) -> None:
        self.call("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    def grant_lease(self, ttl: int) -> int:
        return int(self.call("/v3/lease/grant", {"TTL": str(ttl)})["ID"])


def _batches(items: Iterable[tuple[bytes, bytes]]) -> Iterator[list[tuple[bytes, bytes]]]:
    batch: list[tuple[bytes, bytes]] = []
    size = 0
    for key, value in items:
        cost = len(key) + len(value)
        if batch and (len(batch) >= MAX_TXN_OPS or size + cost > MAX_TXN_RAW_BYTES):
            yield batch
            batch, size = [], 0
        batch.append((key, value))
        size += cost
    if batch:
        yield batch

"""A seeded random workload against real etcd, and etcd's own Range at each revision it wrote.

The differential test of point-in-time restore (tests/integration/test_point_fuzz.py, and the
longer runs of /work/bench-work/s29/hi/) drives it while capture runs, then compares what
lifeboat builds at a revision with what etcd answered at that revision before any compaction.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lifeboat.errors import LifeboatError
from lifeboat.etcd import Delete, EtcdClient, Put

Row = tuple[bytes, bytes, int, int, int, int]  # key, value, create, mod, version, lease

# Keys that are prefixes of each other, hold 0xff and NUL bytes, and are not UTF-8.
KEYS = [b"/a", b"/a/", b"/a/b", b"/a/b/c", b"/ab", b"/a\xff", b"/a\xff\xff", b"\xff", b"\xff\xff\x00",
        b"\x00", b"\x00\x00", b"/bin/\x80\x81", b"/bin/\xc3\x28", b"/r/1", b"/r/2", b"/r/10", b"/r/\xff",
        b"/registry/pods/ns/p", b"/registry/pods/ns/p2", b"/registry/pods/ns2/q", b"/z"]


def state(client: EtcdClient, revision: int) -> list[Row]:
    """Every key at ``revision`` as etcd serves it."""
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
            for kv in client.range_all(b"\0", b"\0", revision=revision)]


@dataclass
class Workload:
    """What a seeded run wrote: etcd's state at each revision (read before any compaction), and
    the wall-clock time each of its calls returned at."""

    client: EtcdClient
    seed: int
    big_values: int = 2  # 1 MiB values written at most
    rng: random.Random = field(init=False)
    states: dict[int, list[Row]] = field(default_factory=dict)
    returned: list[tuple[datetime, int]] = field(default_factory=list)  # (time, revision etcd was at)
    leases: list[int] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    recorded_to: int = 0
    first: int = 0
    compacted: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def revision(self) -> int:
        return self.client.range(b"\0", b"\0", limit=1).revision

    def record(self) -> None:
        """Read etcd's state at every revision not recorded yet (before a compaction can drop them)."""
        now = self.revision()
        for revision in range(max(self.recorded_to + 1, self.first or now), now + 1):
            self.states[revision] = state(self.client, revision)
        self.recorded_to = now

    def start(self) -> None:
        self.first = self.revision()
        self.record()

    def value(self) -> bytes:
        kind = self.rng.random()
        if kind < 0.15:
            return b""
        if kind < 0.2 and self.big_values > 0:
            self.big_values -= 1
            return self.rng.randbytes(1 << 20)
        if kind < 0.6:
            return self.rng.randbytes(self.rng.randint(1, 40))
        return f"v{self.rng.randint(0, 10**6)}".encode()

    def key(self) -> bytes:
        return self.rng.choice(KEYS)

    def step(self) -> None:
        """One random operation."""
        choice = self.rng.random()
        c = self.client
        if choice < 0.35:
            lease = self.rng.choice(self.leases) if self.leases and self.rng.random() < 0.25 else 0
            self._try("put", lambda: c.put(self.key(), self.value(), lease=lease))
        elif choice < 0.45:
            self._try("delete", lambda: c.delete_range(self.key()))
        elif choice < 0.52:
            low, high = sorted(self.rng.sample(KEYS, 2))
            self._try("delete range", lambda: c.delete_range(low, high))
        elif choice < 0.56:
            self._try("delete prefix", lambda: c.delete_range(self.rng.choice([b"/a", b"/r/", b"\xff", b"/"]),
                                                              prefix=True))
        elif choice < 0.70:
            keys = self.rng.sample(KEYS, self.rng.randint(2, 4))
            ops: list[Put | Delete] = [Put(k, self.value()) for k in keys[:-1]]
            ops.append(Delete(keys[-1]))
            self.rng.shuffle(ops)
            self._try("txn", lambda: c.txn([], ops))
        elif choice < 0.74:
            key = self.key()  # a put and a delete of one key in one txn (etcd refuses it)
            self._try("txn put+delete one key", lambda: c.txn([], [Put(key, b"p"), Delete(key)]))
        elif choice < 0.77:
            key = self.key()  # two puts of one key in one txn (etcd refuses it)
            self._try("txn two puts of one key", lambda: c.txn([], [Put(key, b"1"), Put(key, b"2")]))
        elif choice < 0.83:
            self.leases.append(c.lease_grant(self.rng.choice([1, 2, 600])))
            self.ops.append("lease grant")
        elif choice < 0.87 and self.leases:
            lease = self.leases.pop(self.rng.randrange(len(self.leases)))
            self._try("lease revoke", lambda: c.lease_revoke(lease))
        else:
            key = self.key()
            self._try("put on a new short lease", lambda: c.put(key, self.value(), lease=c.lease_grant(1)))
        self.returned.append((datetime.now(UTC), self.revision()))

    def _try(self, what: str, call: Callable[[], object]) -> None:
        try:
            call()
            self.ops.append(what)
        except LifeboatError as exc:  # etcd refused it (a duplicate key in a txn, a lease gone)
            self.ops.append(f"{what} refused: {str(exc)[:60]}")

    def compact(self, physical: bool) -> int:
        """Compact etcd at a random recorded revision, after recording every revision so far."""
        self.record()
        at = self.rng.randint(max(self.first, self.compacted + 1), self.recorded_to)
        self.client.compact(at, physical=physical)
        self.compacted = at
        self.ops.append(f"compact {at} physical={physical}")
        return at

    def settle(self, seconds: float) -> None:
        """Let short leases expire (their keys' deletes are revisions of etcd's own)."""
        time.sleep(seconds)


def differences(expected: list[Row], got: list[Row]) -> str:
    """What differs between two states, briefly (no values: they may be 1 MiB)."""
    want, have = {r[0]: r for r in expected}, {r[0]: r for r in got}
    lines = []
    for key in sorted(set(want) | set(have)):
        a, b = want.get(key), have.get(key)
        if a != b:
            lines.append(f"{key!r}: etcd {_brief(a)} lifeboat {_brief(b)}")
    return "; ".join(lines[:8]) + (f" (+{len(lines) - 8} more)" if len(lines) > 8 else "")


def _brief(row: Row | None) -> tuple[int, ...] | None:
    return None if row is None else (len(row[1]), *row[2:])


def fuzz_seed() -> int:
    """``LIFEBOAT_FUZZ_SEED`` or a fixed one: a failure names its seed, to be run again."""
    return int(os.environ.get("LIFEBOAT_FUZZ_SEED", "2912"))


class CaptureProcess:
    """``lifeboat capture`` as a process of its own, killed and started again at will."""

    def __init__(self, endpoint: str, repo: str, workdir: str, flush: str = "200ms",
                 env: dict[str, str] | None = None) -> None:
        self.env = {**os.environ, **(env or {})}
        config = os.path.join(workdir, "lifeboat.yaml")
        with open(config, "w") as out:
            out.write("agent:\n  lease-ttl: 2s\n")
        self.command = [sys.executable, "-m", "lifeboat.cli.main", "capture", "--config", config, "--repo", repo,
                        "--cluster", "prod", "--endpoints", endpoint, "--no-files", "--flush-interval", flush,
                        "--segment-max-bytes", "1MiB", "--spool-dir", os.path.join(workdir, "spool")]
        self.log = open(os.path.join(workdir, "capture.log"), "ab")
        self.process: subprocess.Popen[bytes] | None = None
        self.ended: list[tuple[str, int]] = []  # how each run ended: the signal sent, its exit code

    def start(self) -> None:
        """Start capture; a run refused because the killed one's lock has not expired yet is started again."""
        deadline = time.monotonic() + 30
        while True:
            self.process = subprocess.Popen(self.command, stdout=self.log, stderr=self.log, env=self.env)
            try:
                code = self.process.wait(timeout=1.5)
            except subprocess.TimeoutExpired:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"capture did not start: exit {code}")
            time.sleep(0.3)

    def stop(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.ended.append((signal.Signals(sig).name, self.process.wait(timeout=60)))
        self.process = None

    def close(self) -> None:
        if self.process is not None:
            self.stop(signal.SIGTERM)
        self.log.close()


def fuzz_kills() -> int:
    """How many times capture is stopped in a run: ``LIFEBOAT_FUZZ_KILLS`` or a few."""
    return int(os.environ.get("LIFEBOAT_FUZZ_KILLS", "4"))


def fuzz_steps() -> int:
    """How many random operations the differential run makes: ``LIFEBOAT_FUZZ_STEPS`` or 45."""
    return int(os.environ.get("LIFEBOAT_FUZZ_STEPS", "45"))

"""Realistic etcd snapshots for benchmarks, generated once with a real etcd and cached.

``make_snapshot(size_bytes, path)`` starts etcd 3.5.1 on free loopback ports, writes
Kubernetes-like keys (``/registry/<resource>/<namespace>/<name>``, values mostly 1-20 KiB,
every key rewritten several times so the db holds many revisions) until the backend db
reaches ``size_bytes``, then saves a snapshot with the stock ``etcdctl snapshot save``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.binaries import etcd_35  # noqa: E402
from tests.support.etcd import EtcdCluster  # noqa: E402
from tests.support.etcd_gateway import Gateway  # noqa: E402
from benchmarks.teardown import on_termination  # noqa: E402

BENCH_WORK = REPO / "bench-work"
RESOURCES = ("pods", "configmaps", "secrets", "deployments", "replicasets", "events", "leases")
KEYS_PER_ROUND = 20_000


def work_dir(text: str) -> Path:
    """``--work``'s value, made absolute: a benchmark hands paths in it to programs that run in
    other directories (``weed`` in its own) or accept only absolute ones (``--data-dir``)."""
    return Path(text).resolve()


def results_dir(work: Path, default_work: Path) -> Path:
    """Where a benchmark writes its JSON results: ``bench-work/`` when it ran in its default work
    dir (where docs/benchmarks.md and earlier runs look), else the work dir it was given, so two
    runs in their own work dirs do not overwrite each other's results."""
    return BENCH_WORK if work.resolve() == default_work.resolve() else work


def _value_size(rng: random.Random) -> int:
    if rng.random() < 0.8:
        return rng.randrange(1024, 20 * 1024)
    return rng.randrange(100, 1024)


# Words that recur in stored Kubernetes objects (field names, managers, label keys), so that
# the "kube" style compresses roughly as real etcd data does (zstd -3: about 3-4x).
_WORDS = [w.encode() for w in (
    "metadata", "namespace", "creationTimestamp", "resourceVersion", "managedFields", "fieldsV1",
    "f:metadata", "f:labels", "f:spec", "f:status", "kube-controller-manager", "kubectl-client-side-apply",
    "app.kubernetes.io/name", "app.kubernetes.io/instance", "pod-template-hash", "containers", "image",
    "registry.k8s.io/pause:3.9", "imagePullPolicy", "IfNotPresent", "resources", "requests", "limits",
    "cpu", "memory", "volumeMounts", "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly", "true",
    "terminationMessagePath", "/dev/termination-log", "ownerReferences", "ReplicaSet", "apps/v1",
    "Running", "Ready", "ContainersReady", "PodScheduled", "conditions", "lastTransitionTime",
)]


def _kube_like(rng: random.Random, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        if rng.random() < 0.1:
            out += rng.randbytes(16).hex().encode()  # uids, hashes: incompressible
        else:
            out += rng.choice(_WORDS) + b'":"' + str(rng.randrange(1000)).encode() + b'",'
    return bytes(out[:size])


def _round(rng: random.Random, round_: int, style: str = "random") -> Iterator[tuple[bytes, bytes]]:
    for i in range(KEYS_PER_ROUND):
        resource = RESOURCES[i % len(RESOURCES)]
        key = f"/registry/{resource}/ns-{i % 97:02d}/obj-{i:06d}".encode()
        header = b"k8s\x00\n\x0bv1\x12\x03" + resource.encode() + f"#{round_}".encode()
        size = _value_size(rng)
        body = _kube_like(rng, size) if style == "kube" else rng.randbytes(size)
        yield key, header + body


def _db_size(gw: Gateway) -> int:
    return int(gw.call("/v3/maintenance/status", {})["dbSize"])


def _generated(path: Path, fill: Callable[[Gateway], object], quota_bytes: int = 4 << 30,
               resume: bool = False) -> Path:
    """Return ``path``, creating it unless it exists: ``fill`` writes into a fresh etcd 3.5.1,
    whose snapshot ``etcdctl snapshot save`` then writes to ``path``.

    With ``resume``, the etcd data an interrupted generation left is started again and
    ``fill`` goes on from there (it must stop by what the db holds, not by a count)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    workdir = path.parent / f".{path.name}.etcd"
    if not resume:
        shutil.rmtree(workdir, ignore_errors=True)
    started = time.monotonic()
    cluster = EtcdCluster(etcd_35(), workdir, quota_bytes=quota_bytes)
    try:
        # Reopening gigabytes of etcd data (rebuilding its index) takes minutes, not seconds.
        cluster.start(timeout=1800 if resume else 30)
        member = cluster.first()
        gw = Gateway(member.client_port)
        try:
            fill(gw)
        finally:
            gw.close()
        partial = path.with_suffix(".part")
        member.etcdctl("snapshot", "save", str(partial), timeout=3600)
        partial.rename(path)
    finally:
        cluster.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"made {path} in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return path


def make_snapshot(size_bytes: int, path: Path, style: str = "random") -> Path:
    """Return ``path``, creating it unless it already exists (delete it to regenerate).

    ``style`` "random" fills values with random bytes (incompressible); "kube" with
    Kubernetes-like text that compresses about as real etcd data does.
    """
    rng = random.Random(2024)

    def fill(gw: Gateway) -> None:
        round_ = 0
        while _db_size(gw) < size_bytes:
            gw.put_many(_round(rng, round_, style))
            round_ += 1
            print(f"round {round_}: db {_db_size(gw) >> 20} MiB", file=sys.stderr)

    return _generated(path, fill)


def make_many_keys_snapshot(path: Path, keys: int = 450_000, value_size: int = 1200) -> Path:
    """Return ``path``, creating it unless it exists: ``keys`` keys of ~``value_size`` bytes,
    each written once (the shape of a big cluster's many small objects: pods, events)."""
    rng = random.Random(450)

    def items() -> Iterator[tuple[bytes, bytes]]:
        for i in range(keys):
            resource = RESOURCES[i % len(RESOURCES)]
            key = f"/registry/{resource}/ns-{i % 311:03d}/obj-{i:07d}".encode()
            yield key, b"k8s\x00\n\x0bv1\x12\x03" + _kube_like(rng, value_size - rng.randrange(0, 200))

    return _generated(path, lambda gw: gw.put_many(items()))


def make_history_snapshot(path: Path, keys: int = 40_000, writes: int = 21, value_size: int = 1200) -> Path:
    """Return ``path``, creating it unless it exists: ``keys`` keys each written ``writes`` times
    (created, then rewritten 20 times) and never compacted, as an uncompacted Kubernetes store
    keeps every revision: the db holds ``keys`` × ``writes`` revisions of ~``value_size`` bytes."""
    rng = random.Random(21)

    def items(write: int) -> Iterator[tuple[bytes, bytes]]:
        for i in range(keys):
            resource = RESOURCES[i % len(RESOURCES)]
            key = f"/registry/{resource}/ns-{i % 131:03d}/obj-{i:06d}".encode()
            yield key, (b"k8s\x00\n\x0bv1\x12\x03" + f"rv{write}".encode()
                        + _kube_like(rng, value_size - rng.randrange(0, 200)))

    def fill(gw: Gateway) -> None:
        for write in range(writes):
            gw.put_many(items(write))
            print(f"write {write + 1}/{writes}: db {_db_size(gw) >> 20} MiB", file=sys.stderr)

    return _generated(path, fill)


def _kube_like_pool(rng: random.Random, size: int) -> bytes:
    """Kubernetes-like text of ``size`` bytes, to slice values from: slicing is ~100x faster
    than composing each value word by word, which matters for gigabytes."""
    return b"".join(_kube_like(rng, 1 << 20) for _ in range(size >> 20))


def make_large_snapshot(size_bytes: int, path: Path, live_keys: int = 200_000) -> Path:
    """Return ``path``, creating it unless it exists: Kubernetes-like values of 1-20 KiB (sliced
    from a 64 MiB pool, larger than zstd's window, so they compress as the "kube" style does)
    over ``live_keys`` keys, each rewritten until the db reaches ``size_bytes``.

    etcd's suggested maximum db size is 8 GiB (its ``--quota-backend-bytes`` warns above it):
    the quota is raised past ``size_bytes`` so the fill is not stopped by a NOSPACE alarm."""
    rng = random.Random(8)
    pool = _kube_like_pool(rng, 64 << 20)

    def value(i: int, round_: int) -> bytes:
        size = _value_size(rng)
        start = rng.randrange(0, len(pool) - size)
        uid = rng.randbytes(16).hex().encode()
        return b"k8s\x00\n\x0bv1\x12\x03" + f"#{round_}:{i}".encode() + uid + pool[start:start + size]

    def items(round_: int) -> Iterator[tuple[bytes, bytes]]:
        for n in range(KEYS_PER_ROUND):
            i = (round_ * KEYS_PER_ROUND + n) % live_keys
            key = f"/registry/{RESOURCES[i % len(RESOURCES)]}/ns-{i % 211:03d}/obj-{i:07d}".encode()
            yield key, value(i, round_)

    def fill(gw: Gateway) -> None:
        round_ = 0
        while _db_size(gw) < size_bytes:
            _retried(lambda: gw.put_many(items(round_)))
            round_ += 1
            if round_ % 10 == 0:
                print(f"round {round_}: db {_db_size(gw) >> 20} MiB", file=sys.stderr)

    return _generated(path, fill, quota_bytes=size_bytes + (2 << 30), resume=True)


def _retried(write: Callable[[], object], attempts: int = 10) -> None:
    """Run ``write`` (idempotent puts) again when a busy machine makes etcd time out."""
    for attempt in range(1, attempts + 1):
        try:
            write()
            return
        except RuntimeError as exc:
            if "request timed out" not in str(exc) or attempt == attempts:
                raise
            print(f"etcd timed out; writing the round again ({attempt})", file=sys.stderr)
            time.sleep(2 * attempt)


SHAPES = ("kube", "many-keys", "history", "large")


def shaped_snapshot(shape: str, size_mib: int = 1024) -> Path:
    """The cached snapshot of one data shape: "kube" (120k keys of 1-20 KiB written 6 times),
    "many-keys" (450k keys of ~1.2 KB written once), "history" (40k keys of ~1.2 KB, 21 writes each)."""
    if shape == "kube":
        return make_snapshot(size_mib << 20, BENCH_WORK / f"kube-like-{size_mib}MiB.db", style="kube")
    if shape == "many-keys":
        return make_many_keys_snapshot(BENCH_WORK / "small-keys-450000.db")
    if shape == "history":
        return make_history_snapshot(BENCH_WORK / "history-40000x21.db")
    if shape == "large":
        return make_large_snapshot(size_mib << 20, BENCH_WORK / f"large-{size_mib}MiB.db")
    raise SystemExit(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--shape", choices=SHAPES, help="a cached shape instead of --out")
    args = parser.parse_args()
    if args.shape:
        print(shaped_snapshot(args.shape, args.size_mib))
        return
    out = args.out or BENCH_WORK / f"k8s-{args.size_mib}MiB.db"
    print(make_snapshot(args.size_mib << 20, out))


if __name__ == "__main__":
    on_termination()  # SIGTERM cleans up like Ctrl-C
    main()

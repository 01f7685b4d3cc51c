"""Time ``lifeboat k8s ls SNAPSHOT -o json`` on a snapshot holding 100k Kubernetes objects.

Usage: ``python benchmarks/bench_k8s_inventory.py [SNAPSHOT] [--objects N] [--repeat R]``.
Without SNAPSHOT, a cached one under ``bench-work/`` is used or generated once: etcd 3.5.1
on free loopback ports is filled with the test keyspace (Kubernetes' own stored fixtures
renamed into many namespaces: protobuf objects, JSON custom resources, aescbc Secrets),
then saved with the stock ``etcdctl snapshot save``. Each run is a fresh ``lifeboat``
process, as an operator would run it; the target is 10 s. Results go to JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for entry in (REPO, REPO / "src"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from benchmarks import rss  # noqa: E402
from benchmarks.dataset import BENCH_WORK  # noqa: E402
from tests.support.binaries import etcd_35  # noqa: E402
from tests.support.etcd import EtcdCluster  # noqa: E402
from tests.support.etcd_load import load_keys  # noqa: E402
from tests.support.k8s_keyspace import build_keyspace, iter_items  # noqa: E402
from benchmarks.teardown import on_termination  # noqa: E402

TARGET_SECONDS = 10.0
PER_KIND = 10
OBJECTS_PER_NAMESPACE = 84  # with PER_KIND 10: see tests/support/k8s_keyspace.py


def make_snapshot(objects: int, path: Path) -> Path:
    """Return ``path``, creating it unless it exists (delete it to regenerate)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    count = -(-objects // OBJECTS_PER_NAMESPACE)
    space = build_keyspace(tuple(f"ns-{i:05d}" for i in range(count)), per_kind=PER_KIND)
    workdir = path.parent / f".{path.name}.etcd"
    started = time.monotonic()
    with EtcdCluster(etcd_35(), workdir) as cluster:
        from lifeboat.etcd import ConnectionSettings, EtcdClient

        member = cluster.first()
        with EtcdClient(ConnectionSettings((member.client_url,))) as client:
            load_keys(client, iter_items(space))
        partial = path.with_suffix(".part")
        member.etcdctl("snapshot", "save", str(partial), timeout=600)
        partial.rename(path)
    subprocess.run(["rm", "-rf", str(workdir)], check=True)
    print(f"made {path}: {len(space.items)} objects in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return path


def time_ls(snapshot: Path) -> tuple[float, int, dict[str, object]]:
    """``lifeboat k8s ls -o json``: its wall time, its peak RSS (its own VmHWM, see
    benchmarks/rss.py) and its listing."""
    done = rss.run([sys.executable, "-m", "lifeboat.cli.main", "k8s", "ls", str(snapshot), "-o", "json"],
                   {"PYTHONPATH": str(REPO / "src")}, capture=True)
    if done.exit_code != 0:
        raise SystemExit(f"lifeboat k8s ls exited {done.exit_code}: {done.output[-500:].decode(errors='replace')}")
    return done.wall_s, done.peak_bytes, json.loads(done.output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("snapshot", nargs="?", type=Path)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=BENCH_WORK / "bench_k8s_inventory.json")
    args = parser.parse_args()
    snapshot = args.snapshot or make_snapshot(args.objects, BENCH_WORK / f"k8s-{args.objects}-objects.db")

    _, _, listing = time_ls(snapshot)  # warm the page cache
    runs = [time_ls(snapshot) for _ in range(args.repeat)]
    times = [wall for wall, _, _ in runs]
    result = {
        "snapshot": str(snapshot),
        "snapshot_bytes": snapshot.stat().st_size,
        "objects": listing["objects_total"],
        "errors": len(listing["errors"]),  # type: ignore[arg-type]
        "repeat": args.repeat,
        "ls_median_s": statistics.median(times),
        "ls_s": times,
        # The timed ls runs' own peak (not RUSAGE_CHILDREN's ru_maxrss, which carries this
        # script's RSS into every child it forks).
        "peak_rss_mib": max(peak for _, peak, _ in runs) / (1 << 20),
        "target_s": TARGET_SECONDS,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    mib = result["snapshot_bytes"] / (1 << 20)
    print(f"snapshot {snapshot} ({mib:.0f} MiB, {result['objects']} objects, {result['errors']} errors)")
    print(f"lifeboat k8s ls -o json  median {result['ls_median_s']:.2f}s  (target <= {TARGET_SECONDS:.0f}s), "
          f"peak RSS {result['peak_rss_mib']:.0f} MiB")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    on_termination()  # SIGTERM cleans up like Ctrl-C
    main()

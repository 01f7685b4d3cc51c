"""Time ``etcdutl snapshot status`` against lifeboat's ``snapshot_status`` on one snapshot.

Usage: ``python benchmarks/bench_snapshot_status.py [SNAPSHOT] [--size-mib N] [--repeat R]``.
Without SNAPSHOT, a cached Kubernetes-like snapshot of about N MiB is used or generated
(``benchmarks/dataset.py``). Runs alternate between the two tools after one warm-up each
(so both read from the page cache); the medians and their ratio are printed and written
as JSON. lifeboat is timed in-process and, for a like-for-like comparison with a fresh
etcdutl process, also as a fresh ``python -c`` process.
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

from benchmarks.dataset import BENCH_WORK, make_snapshot  # noqa: E402
from lifeboat.snapshot import snapshot_status  # noqa: E402
from tests.support.binaries import etcd_35  # noqa: E402
from benchmarks.teardown import on_termination  # noqa: E402

TARGET_RATIO = 1.5


def time_etcdutl(etcdutl: Path, snapshot: Path) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    done = subprocess.run(
        [str(etcdutl), "snapshot", "status", "-w", "json", str(snapshot)],
        capture_output=True, check=True,
    )
    return time.perf_counter() - started, json.loads(done.stdout)


def time_lifeboat(snapshot: Path) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    status = snapshot_status(snapshot)
    return time.perf_counter() - started, status.to_etcdutl_json()


def time_lifeboat_process(snapshot: Path) -> float:
    code = (
        "import sys; from lifeboat.snapshot import snapshot_status; "
        "print(snapshot_status(sys.argv[1]).etcdutl_json_text())"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(snapshot)], capture_output=True, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("snapshot", nargs="?", type=Path)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=BENCH_WORK / "bench_snapshot_status.json")
    args = parser.parse_args()

    snapshot = args.snapshot or make_snapshot(
        args.size_mib << 20, BENCH_WORK / f"k8s-{args.size_mib}MiB.db"
    )
    etcdutl = etcd_35().etcdutl
    assert etcdutl is not None

    _, reference = time_etcdutl(etcdutl, snapshot)
    _, ours = time_lifeboat(snapshot)
    if ours != reference:
        raise SystemExit(f"MISMATCH: etcdutl {reference} lifeboat {ours}")

    etcdutl_times, lifeboat_times, process_times = [], [], []
    for _ in range(args.repeat):
        etcdutl_times.append(time_etcdutl(etcdutl, snapshot)[0])
        lifeboat_times.append(time_lifeboat(snapshot)[0])
        process_times.append(time_lifeboat_process(snapshot))

    result = {
        "snapshot": str(snapshot),
        "snapshot_bytes": snapshot.stat().st_size,
        "status": reference,
        "repeat": args.repeat,
        "etcdutl_median_s": statistics.median(etcdutl_times),
        "lifeboat_median_s": statistics.median(lifeboat_times),
        "lifeboat_process_median_s": statistics.median(process_times),
        "etcdutl_s": etcdutl_times,
        "lifeboat_s": lifeboat_times,
        "lifeboat_process_s": process_times,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    result["ratio"] = result["lifeboat_median_s"] / result["etcdutl_median_s"]
    result["process_ratio"] = result["lifeboat_process_median_s"] / result["etcdutl_median_s"]
    result["target_ratio"] = TARGET_RATIO
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    mib = result["snapshot_bytes"] / (1 << 20)
    print(f"snapshot {snapshot} ({mib:.0f} MiB), status {json.dumps(reference)}")
    print(f"etcdutl 3.5.1        median {result['etcdutl_median_s']:.3f}s")
    print(f"lifeboat in-process  median {result['lifeboat_median_s']:.3f}s  ratio {result['ratio']:.2f}x")
    print(
        f"lifeboat new process median {result['lifeboat_process_median_s']:.3f}s  "
        f"ratio {result['process_ratio']:.2f}x   (target <= {TARGET_RATIO}x)"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    on_termination()  # SIGTERM cleans up like Ctrl-C
    main()

"""lifeboat's bbolt writer side by side with ``etcdutl snapshot restore`` of the same file.

Usage: ``python benchmarks/bench_writer.py [--size-mib N] [--small-keys K] [--rounds R]
[--append-rows A] [--work DIR]``.

Three shapes, each timed in fresh processes with the two tools alternating round by round
(after one untimed warm-up each, so both read the source from the page cache):

* a ~1 GB Kubernetes-like snapshot (``benchmarks/dataset.py``, style "kube", values mostly
  1-20 KiB): lifeboat writes a copy bumped by a billion revisions (what a restore with the
  native bump adds) vs ``etcdutl snapshot restore`` 3.5.1 of the same file;
* many small keys (about 450,000 keys of ~1.2 KB, as a big cluster's pods and events): the same
  pair;
* appending 1,000,000 MVCC rows (``mvccpb.KeyValue`` values of ~600 bytes) to the small-keys
  db in one ``write_db``: rows per second, in-process.

Every output is checked by ``lifeboat snapshot check`` once (not timed). Results go to
``bench-work/bench_writer.json`` (in the ``--work`` dir when one other than the default is given);
``docs/benchmarks.md`` reports the ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for entry in (REPO, REPO / "src"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from benchmarks.dataset import BENCH_WORK, make_many_keys_snapshot, make_snapshot, results_dir, work_dir  # noqa: E402
from lifeboat.etcdapi.wire import write_varint  # noqa: E402
from lifeboat.snapshot import snapshot_status  # noqa: E402
from lifeboat.snapshot.check import check_snapshot  # noqa: E402
from lifeboat.snapshot.mvcc import encode_revision  # noqa: E402
from lifeboat.snapshot.writer import BucketChanges, write_db  # noqa: E402
from tests.support.binaries import etcd_35  # noqa: E402
from benchmarks.teardown import on_termination  # noqa: E402

BUMP = 1_000_000_000
BUMP_CODE = (
    "import sys; from pathlib import Path; from lifeboat.snapshot.writer import bump_revision; "
    "bump_revision(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))"
)


def time_bump(snapshot: Path, out: Path) -> float:
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", BUMP_CODE, str(snapshot), str(out), str(BUMP)],
                   check=True, capture_output=True)
    return time.perf_counter() - started


def time_etcdutl_restore(etcdutl: Path, snapshot: Path, data_dir: Path) -> float:
    shutil.rmtree(data_dir, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([str(etcdutl), "snapshot", "restore", str(snapshot), f"--data-dir={data_dir}",
                    "--name=bench", "--initial-cluster=bench=http://127.0.0.1:2380",
                    "--initial-advertise-peer-urls=http://127.0.0.1:2380"],
                   check=True, capture_output=True)
    return time.perf_counter() - started


def compare(name: str, snapshot: Path, work: Path, rounds: int) -> dict[str, object]:
    etcdutl = etcd_35().etcdutl
    assert etcdutl is not None
    out, data_dir = work / f"{name}-bumped.db", work / f"{name}-restored"
    time_bump(snapshot, out)
    problems = check_snapshot(out).problems
    if problems:
        raise SystemExit(f"the bumped copy of {snapshot} fails the check: {problems[0]}")
    time_etcdutl_restore(etcdutl, snapshot, data_dir)
    lifeboat, reference = [], []
    for round_ in range(rounds):
        reference.append(time_etcdutl_restore(etcdutl, snapshot, data_dir))
        lifeboat.append(time_bump(snapshot, out))
        print(f"{name} round {round_ + 1}: etcdutl restore {reference[-1]:.2f}s, "
              f"lifeboat bumped copy {lifeboat[-1]:.2f}s", file=sys.stderr)
    shutil.rmtree(data_dir, ignore_errors=True)
    out.unlink(missing_ok=True)
    ratio = statistics.median(lifeboat) / statistics.median(reference)
    return {"shape": name, "db_bytes": snapshot.stat().st_size,
            "keys": snapshot_status(snapshot).total_key,
            "etcdutl_restore_s": [round(r, 3) for r in reference],
            "lifeboat_bump_s": [round(r, 3) for r in lifeboat], "ratio": round(ratio, 3)}


def mvcc_rows(first_revision: int, count: int) -> Iterator[tuple[bytes, bytes]]:
    """Rows as etcd stores a put: revision key, then a KeyValue of ~600 bytes."""
    body = b"k8s\x00" + b"x" * 560
    for i in range(count):
        revision = first_revision + i
        key = b"/registry/events/ns-%02d/ev-%08d" % (i % 97, i)
        kv = (b"\x0a" + bytes([len(key)]) + key + b"\x10" + write_varint(revision) + b"\x18"
              + write_varint(revision) + b"\x20\x01\x2a" + write_varint(len(body)) + body)
        yield encode_revision(revision, 0), kv


def append_rate(snapshot: Path, work: Path, rows: int) -> dict[str, object]:
    out = work / "appended.db"
    first = snapshot_status(snapshot).revision + 1
    started = time.perf_counter()
    written = write_db(snapshot, out, [BucketChanges(b"key", appends=mvcc_rows(first, rows))])
    elapsed = time.perf_counter() - started
    status = snapshot_status(out)
    assert status.revision == first + rows - 1 and not check_snapshot(out).problems
    out.unlink()
    return {"rows": rows, "seconds": round(elapsed, 3), "rows_per_s": round(rows / elapsed),
            "bytes_written": written.pages_written * written.page_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--small-keys", type=int, default=450_000)
    parser.add_argument("--append-rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=work_dir, default=BENCH_WORK / "writer-run",
                        help="work dir, emptied first (default bench-work/writer-run)")
    args = parser.parse_args()
    big = make_snapshot(args.size_mib << 20, BENCH_WORK / f"kube-like-{args.size_mib}MiB.db", style="kube")
    small = make_many_keys_snapshot(BENCH_WORK / f"small-keys-{args.small_keys}.db", args.small_keys)
    work: Path = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results = [compare("large values", big, work, args.rounds),
               compare("many small keys", small, work, args.rounds)]
    appended = append_rate(small, work, args.append_rows)
    (results_dir(work, BENCH_WORK / "writer-run") / "bench_writer.json").write_text(json.dumps(
        {"shapes": results, "append": appended}, indent=2))
    print("| shape | db | keys | etcdutl snapshot restore | lifeboat bumped copy | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        ref = statistics.median(r["etcdutl_restore_s"])  # type: ignore[arg-type]
        ours = statistics.median(r["lifeboat_bump_s"])  # type: ignore[arg-type]
        print(f"| {r['shape']} | {int(r['db_bytes']) / 1e6:.0f} MB | {r['keys']} | {ref:.2f} s "  # type: ignore[call-overload]
              f"| {ours:.2f} s | {r['ratio']:.2f}× |")
    print(f"\nappend: {appended['rows']} MVCC rows in {appended['seconds']} s "
          f"= {appended['rows_per_s']} rows/s")


if __name__ == "__main__":
    on_termination()  # SIGTERM cleans up like Ctrl-C
    main()

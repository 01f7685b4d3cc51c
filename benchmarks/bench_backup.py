"""`lifeboat backup` side by side with `etcdctl snapshot save`, on one live ~1 GB etcd.

The db is a cached Kubernetes-like snapshot (``benchmarks/dataset.py``, style "kube", which
compresses about 4x like real etcd data), restored into a data dir and served by etcd 3.5.1
over mTLS on loopback. Each round runs, in turn: ``etcdctl snapshot save``; ``lifeboat backup``
to a local repository (zstd); the same with age encryption; the same to SeaweedFS S3. Times,
CPU and peak RSS (the larger of the process's own high-water mark and the sampled sum over its
process tree, ``benchmarks/rss.py``) are recorded; ratios are medians against etcdctl's median from the
same run. Results go to ``bench-work/bench_backup-<snapshot>.json`` (in the ``--work`` dir when
another is given) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pyrage  # noqa: E402

from benchmarks import rss  # noqa: E402
from benchmarks.dataset import BENCH_WORK, SHAPES, results_dir, shaped_snapshot, work_dir  # noqa: E402
from tests.support.binaries import etcd_35, weed  # noqa: E402
from tests.support.etcd import EtcdMember  # noqa: E402
from tests.support.pki import make_pki  # noqa: E402
from tests.support.ports import PORT_ATTEMPTS, PortTaken  # noqa: E402
from tests.support.seaweed import SeaweedServer  # noqa: E402
from benchmarks.teardown import on_termination  # noqa: E402

LIFEBOAT = [sys.executable, "-m", "lifeboat.cli.main"]


def frozen_source(rev: str = "HEAD") -> dict[str, str]:
    """Measure committed code: export ``rev``'s src/ and put it first on PYTHONPATH.

    The working tree may be mid-edit while a long benchmark runs. The export is compiled to
    bytecode, as pip compiles an installed wheel: with ``PYTHONDONTWRITEBYTECODE`` set (this
    machine sets it) every run would otherwise compile each module it imports again.
    """
    head = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip()
    target = BENCH_WORK / f"src-{head}"
    if not target.exists():
        target.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", head, "src"], cwd=REPO, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(target / "src")], check=True)
    return dict(os.environ, PYTHONPATH=str(target / "src"))


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int, float]:
    """Run ``argv``; return wall seconds, the peak RSS in bytes of its process tree and its CPU seconds."""
    measured = rss.run(argv, env)
    if measured.exit_code != 0:
        raise SystemExit(f"{argv[0]} failed: {measured.output.decode(errors='replace')[-2000:]}")
    return measured.wall_s, measured.peak_bytes, measured.cpu_s


def serve(snapshot: Path, work: Path) -> EtcdMember:
    release = etcd_35()
    pki = make_pki(work / "pki")
    member = EtcdMember(release, "bench", work, pki)
    assert release.etcdutl is not None
    # The restore of a GB-sized snapshot takes a while on a busy machine: another process may
    # bind one of the member's ports meanwhile. Then again on new ports (the peer URL is in the
    # restored data dir, so it is restored again).
    for attempt in range(1, PORT_ATTEMPTS + 1):
        shutil.rmtree(member.data_dir, ignore_errors=True)
        subprocess.run([str(release.etcdutl), "snapshot", "restore", str(snapshot), "--data-dir",
                        str(member.data_dir), "--name", "bench", "--initial-cluster",
                        f"bench={member.peer_url}", "--initial-advertise-peer-urls", member.peer_url],
                       check=True, capture_output=True)
        log_from = member.log_size()
        member.start(f"bench={member.peer_url}", "bench", state="new")
        try:
            member.wait_healthy(120)
            return member
        except RuntimeError:
            lost = isinstance(member.exited(log_from), PortTaken)
            member.stop()
            if not lost or attempt == PORT_ATTEMPTS:
                raise
            member.new_ports()
        except BaseException:  # Ctrl-C while it starts: stop it all the same
            member.stop()
            raise
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--only", default="",
                        help="run only the lifeboat cases whose name contains this (etcdctl always runs)")
    parser.add_argument("--also", metavar="REV",
                        help="also run every lifeboat case with the code of git revision REV, "
                        "alternating with HEAD's (an A/B of a change)")
    parser.add_argument("--shape", choices=SHAPES, default="kube",
                        help="the data: Kubernetes-like values of 1-20 KiB, 450k keys of ~1.2 KB, "
                        "or 40k keys each rewritten 20 times (uncompacted history)")
    parser.add_argument("--work", type=work_dir, default=BENCH_WORK / "backup-run",
                        help="work dir, emptied first (default bench-work/backup-run; another one lets two "
                        "runs go side by side, and gets the JSON results too)")
    args = parser.parse_args()

    snapshot = shaped_snapshot(args.shape, args.size_mib)
    work: Path = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with ExitStack() as running:
        member = serve(snapshot, work)
        running.callback(member.stop)
        seaweed = None if args.no_s3 else running.enter_context(SeaweedServer(weed(), work / "seaweed"))
        results = run_rounds(member, work, seaweed, args.rounds, args.only, args.also)
    report(results, snapshot, results_dir(work, BENCH_WORK / "backup-run"))


def run_rounds(member: EtcdMember, work: Path, seaweed: SeaweedServer | None,
               rounds: int, only: str = "", also: str | None = None) -> dict[str, list[tuple[float, int, float]]]:
    release = etcd_35()
    tls = member.tls_flags()
    conn = [f"--endpoints={member.client_url}", *tls]
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    env = dict(frozen_source(), ETCDCTL_API="3")
    s3_env = dict(env, **seaweed.s3().env()) if seaweed else env
    cases: dict[str, tuple[list[str], dict[str, str]]] = {
        "etcdctl snapshot save": ([str(release.etcdctl), *conn, "snapshot", "save", str(work / "etcdctl.db")], env),
        "lifeboat backup, local, zstd (default level)": (
            [*LIFEBOAT, "backup", *conn, "--no-files", "--repo", str(work / "repo-plain")], env),
        "lifeboat backup, local, zstd -3": (
            [*LIFEBOAT, "backup", *conn, "--no-files", "--zstd-level", "3", "--repo", str(work / "repo-plain")], env),
        "lifeboat backup, local, zstd + age": (
            [*LIFEBOAT, "backup", *conn, "--no-files", "--repo", str(work / "repo-age"),
             "--encrypt-to", recipient], env),
    }
    if seaweed:
        bucket = seaweed.s3().bucket
        cases["lifeboat backup, SeaweedFS S3, zstd"] = (
            [*LIFEBOAT, "backup", *conn, "--no-files", "--repo", f"s3://{bucket}/bench"], s3_env)
    cases = {name: case for name, case in cases.items() if name.startswith("etcdctl") or only in name}
    if also:
        other = frozen_source(also)
        for name, (argv, case_env) in list(cases.items()):
            if name.startswith("lifeboat"):
                cases[f"{name} [{also}]"] = (argv, dict(case_env, PYTHONPATH=other["PYTHONPATH"]))
    results: dict[str, list[tuple[float, int, float]]] = {name: [] for name in cases}
    for round_ in range(rounds):
        for name, (argv, case_env) in cases.items():
            results[name].append(timed(argv, case_env))
            wall, peak, cpu = results[name][-1]
            print(f"round {round_ + 1} {name}: {wall:.2f}s, CPU {cpu:.2f}s, peak RSS {peak / 1e6:.0f} MB, "
                  f"load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
            (work / "etcdctl.db").unlink(missing_ok=True)
            for repo in ("repo-plain", "repo-age"):
                shutil.rmtree(work / repo, ignore_errors=True)
    return results


def report(results: dict[str, list[tuple[float, int, float]]], snapshot: Path, out_dir: Path = BENCH_WORK) -> None:
    base = statistics.median(t for t, _, _ in results["etcdctl snapshot save"])
    rows: list[dict[str, Any]] = []
    for name, runs in results.items():
        median = statistics.median(t for t, _, _ in runs)
        rss = max(r for _, r, _ in runs)
        rows.append({"case": name, "median_s": round(median, 3), "ratio": round(median / base, 3),
                     "peak_rss_mb": round(rss / 1e6, 1), "runs_s": [round(t, 3) for t, _, _ in runs],
                     "cpu_s": round(statistics.median(c for _, _, c in runs), 2)})
    out = {"snapshot": str(snapshot), "snapshot_bytes": snapshot.stat().st_size,
           "cpus": os.cpu_count(), "load_before": os.getloadavg(), "results": rows}
    (out_dir / f"bench_backup-{snapshot.stem}.json").write_text(json.dumps(out, indent=2))
    print(f"db {snapshot.stat().st_size / 1e6:.0f} MB, {len(next(iter(results.values())))} rounds, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| case | median | runs | ratio | peak RSS (max) | CPU (median) |\n| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        runs_text = ", ".join(f"{t:.2f}" for t in r["runs_s"])
        print(f"| {r['case']} | {r['median_s']:.2f} s | {runs_text} s | {r['ratio']:.2f}× | "
              f"{r['peak_rss_mb']:.0f} MB | {r['cpu_s']:.1f} s |")


if __name__ == "__main__":
    on_termination()  # SIGTERM cleans up like Ctrl-C
    main()

"""Reading a SeaweedFS S3 repository that holds thousands of backups (issue #11).

A cluster backed up every 30 minutes has 5,000 backups after 100 days. This writes that many
small but valid backups (a manifest listing 30 captured control-plane files, as a kubeadm
node's does, and a tiny data object) straight through the repository API into a real
SeaweedFS, then times, alternating, each as a fresh process:

* CLI start-up alone (``lifeboat list --help``: every import, no repository access);
* ``lifeboat list --no-cache`` (every backup: one listing of keys and 5,000 manifest reads);
* ``lifeboat list`` with an empty manifest cache (the same reads, and the cache filled);
* ``lifeboat list`` with the cache warm (one listing of keys; no manifest downloaded);
* ``lifeboat list --last 20``;
* ``lifeboat show latest``;
* ``lifeboat restore latest --dry-run`` for a member with explicit flags.

There is no reference tool, so the targets are absolute (list ≤ 2 s; restore latest
--dry-run ≤ 1 s plus start-up). With ``--baseline REV`` the start-up and warm-list cases also
run REV's code in the same rounds (an A/B comparison that a loaded machine cannot skew); with
``--format-1`` the same backups are also written to a repository of format 1 (manifests inside
each backup's folder, what lifeboat wrote before format 2), and the warm list runs against it
too, with this code and with REV's (which may not read format 2). Results go to
``bench-work/bench_repository.json`` (in the ``--work`` dir when one other than the default,
``bench-work/repository-run``, is given).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_backup import LIFEBOAT, frozen_source, timed  # noqa: E402
from benchmarks.dataset import BENCH_WORK, results_dir, work_dir  # noqa: E402
from lifeboat.catalog.layout import MARKER_KEY  # noqa: E402
from lifeboat.catalog.repository import REPOSITORY_FORMAT, BackupRepository  # noqa: E402
from lifeboat.store.s3 import S3Store  # noqa: E402
from tests.support.binaries import etcd_35, weed  # noqa: E402
from tests.support.manifests import fake_backup  # noqa: E402
from tests.support.seaweed import SeaweedServer  # noqa: E402
from benchmarks.teardown import on_termination  # noqa: E402


def fill(seaweed: SeaweedServer, prefix: str, count: int, repository_format: int = REPOSITORY_FORMAT) -> None:
    s3 = seaweed.s3()
    store = S3Store(s3.bucket, prefix, endpoint=s3.endpoint, access_key_id=s3.access_key,
                    secret_access_key=s3.secret_key)
    if repository_format != REPOSITORY_FORMAT:  # as an older lifeboat created it
        store.put_bytes(MARKER_KEY, json.dumps({"format": "lifeboat-repository", "version": repository_format,
                                                "created_at": "2026-01-01T00:00:00+00:00"}).encode(),
                        create_only=True)
    repo = BackupRepository.open(store, create=True)
    assert repo.layout.format == repository_format
    newest = datetime.now(UTC) - timedelta(minutes=7)
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: fake_backup(repo, newest - timedelta(minutes=30 * i), files=30), range(count)))
    print(f"wrote {count} backups (format {repository_format}) in {time.monotonic() - started:.1f}s", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backups", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", metavar="REV", help="also time start-up and a warm list with REV's code")
    parser.add_argument("--skip-cold", action="store_true",
                        help="leave out list --no-cache and list with an empty cache (the slow cases)")
    parser.add_argument("--format-1", action="store_true",
                        help="also time the warm list of the same backups in a format-1 repository")
    parser.add_argument("--work", type=work_dir, default=BENCH_WORK / "repository-run",
                        help="work dir (SeaweedFS data, caches; results too when not the default); "
                        "default %(default)s")
    args = parser.parse_args()

    work = args.work
    with SeaweedServer(weed(), work / f"seaweed-{time.time_ns()}") as seaweed:
        fill(seaweed, "many", args.backups)
        if args.format_1:
            fill(seaweed, "many-format-1", args.backups, repository_format=1)
        results = run_rounds(seaweed, work, args.rounds, args.baseline, args.skip_cold, args.format_1)
    report(results, args.backups, results_dir(work, BENCH_WORK / "repository-run"))


def run_rounds(seaweed: SeaweedServer, work: Path, rounds: int, baseline: str | None,
               skip_cold: bool = False, format_1: bool = False) -> dict[str, list[float]]:
    repo = f"s3://{seaweed.s3().bucket}/many"
    old_repo = f"s3://{seaweed.s3().bucket}/many-format-1"
    env = dict(frozen_source(), **seaweed.s3().env())
    release = etcd_35()
    member = ["--supervisor", "none", "--name", "m0", "--initial-cluster", "m0=http://127.0.0.1:2380",
              "--initial-advertise-peer-urls", "http://127.0.0.1:2380", "--data-dir", str(work / "etcd"),
              "--restore-tool", str(release.etcdutl), "--endpoints", "http://127.0.0.1:2379"]
    cache = work / "cache"
    env["LIFEBOAT_CACHE_DIR"] = str(cache)
    cold = work / "cache-cold"
    cases = {
        "CLI start-up (lifeboat list --help)": [*LIFEBOAT, "list", "--help"],
        "lifeboat list --no-cache": [*LIFEBOAT, "list", "--no-cache", "--repo", repo],
        "lifeboat list (cache empty)": [*LIFEBOAT, "list", "--cache-dir", str(cold), "--repo", repo],
        "lifeboat list (cache warm)": [*LIFEBOAT, "list", "--repo", repo],
        "lifeboat list --last 20": [*LIFEBOAT, "list", "--last", "20", "--repo", repo],
        "lifeboat show latest": [*LIFEBOAT, "show", "latest", "--repo", repo],
        "lifeboat restore latest --dry-run": [*LIFEBOAT, "restore", "latest", "--dry-run", "--repo", repo, *member],
    }
    if skip_cold:
        del cases["lifeboat list --no-cache"], cases["lifeboat list (cache empty)"]
    envs = {name: env for name in cases}
    old_list = "lifeboat list (cache warm), format 1"
    if format_1:
        cases[old_list] = [*LIFEBOAT, "list", "--repo", old_repo]
        envs[old_list] = env
    if baseline:
        before = dict(frozen_source(baseline), **seaweed.s3().env(), LIFEBOAT_CACHE_DIR=str(cache))
        for name in ("CLI start-up (lifeboat list --help)", "lifeboat list (cache warm)", old_list):
            if name in cases:
                cases[f"{name} @{baseline}"] = cases[name]
                envs[f"{name} @{baseline}"] = before
    results: dict[str, list[float]] = {name: [] for name in cases}
    shutil.rmtree(cache, ignore_errors=True)
    for name in [name for name in cases if "cache warm" in name]:
        try:  # fills the cache the warm cases read
            timed(cases[name], envs[name])
        except SystemExit as exc:  # REV cannot read this repository's format
            print(f"{name}: {exc}; left out", file=sys.stderr)
            del cases[name], results[name]
    for round_ in range(rounds):
        for name, argv in cases.items():
            shutil.rmtree(cold, ignore_errors=True)
            results[name].append(timed(argv, envs[name])[0])
            print(f"round {round_ + 1} {name}: {results[name][-1]:.2f}s (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
    return results


def report(results: dict[str, list[float]], backups: int, out_dir: Path) -> None:
    startup = statistics.median(results["CLI start-up (lifeboat list --help)"])
    rows = []
    for name, runs in results.items():
        median = statistics.median(runs)
        rows.append({"case": name, "median_s": round(median, 3), "runs_s": [round(r, 3) for r in runs],
                     "beyond_startup_s": round(median - startup, 3)})
        print(f"{name:40s} median {median:6.2f}s  (start-up + {median - startup:5.2f}s)  "
              f"runs {', '.join(f'{r:.2f}' for r in runs)}")
    for name, runs in results.items():
        median = statistics.median(runs)
        print(f"| {name} | {median:.2f} s | {min(runs):.2f}–{max(runs):.2f} s | {median - startup:.2f} s |")
    out = out_dir / "bench_repository.json"
    out.write_text(json.dumps({"date": datetime.now(UTC).isoformat(timespec="seconds"), "load": os.getloadavg(),
                               "backups": backups, "results": rows}, indent=2))


if __name__ == "__main__":
    on_termination()  # SIGTERM cleans up like Ctrl-C
    main()

"""Capture catching up a backlog, beside ``etcdctl watch`` reading the same one.

Usage: ``python benchmarks/bench_catchup.py [--puts N] [--keys K] [--work DIR]``.

One etcd 3.5.1 on loopback. ``lifeboat capture`` (a child process, local repository, default
settings) starts its chain, is stopped with SIGTERM, and ``--puts`` puts of 1 KiB values
(default 200,000, over ``--keys`` keys) are written while it is away: what etcd then holds
for it is a backlog, as after a restart or an outage shorter than etcd's history. Measured:

* **capture's catch-up**: from the resumed capture's start until the segment holding the last
  revision is committed; its peak RSS (``VmHWM``), sampled until then.
* **the reference**: ``etcdctl watch`` of the whole keyspace from the backlog's first revision
  (its JSON output read by this script), until it has received the last revision.

Results go to ``bench-work/bench_catchup.json`` (in the ``--work`` dir when one other than
the default is given) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_backup import frozen_source  # noqa: E402
from benchmarks.bench_capture import LIFEBOAT, peak_rss  # noqa: E402
from benchmarks.dataset import BENCH_WORK, results_dir, work_dir  # noqa: E402
from lifeboat.etcd import ConnectionSettings, EtcdClient  # noqa: E402
from tests.support.binaries import etcd_35  # noqa: E402
from tests.support.etcd import EtcdCluster  # noqa: E402
from benchmarks.teardown import on_termination, spawned  # noqa: E402


VALUE = os.urandom(1024)


def write_backlog(endpoint: str, puts: int, keys: int, threads: int = 8) -> None:
    def worker(first: int) -> None:
        with EtcdClient(ConnectionSettings((endpoint,))) as client:
            for n in range(first, puts, threads):
                client.put(f"/registry/bench/{n % keys}", VALUE)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def last_committed(repo_dir: Path) -> int:
    """The last revision of the newest committed segment (names start ``<first>-<last>-``)."""
    return max((int(path.name.split("-")[1]) for path in repo_dir.rglob("segments/*.zst*")
                if not path.name.endswith(".tmp")), default=0)


def capture_argv(repo_dir: Path, endpoint: str, work: Path) -> list[str]:
    return LIFEBOAT + ["capture", "--repo", str(repo_dir), "--cluster", "bench", "--endpoints", endpoint,
                       "--no-files", "--spool-dir", str(work / "spool")]


def catch_up(argv: list[str], env: dict[str, str], repo_dir: Path, top: int, log: Path) -> dict[str, float]:
    """Resume capture; seconds until ``top`` is committed, and its peak RSS by then."""
    started = time.monotonic()
    with log.open("ab") as errors, spawned(argv, env=env, stdout=subprocess.DEVNULL, stderr=errors) as proc:
        while last_committed(repo_dir) < top:
            if proc.poll() is not None:
                raise SystemExit(f"capture exited with {proc.returncode} before catching up")
            if time.monotonic() - started > 1800:
                raise SystemExit("capture did not catch up within 30 minutes")
            time.sleep(0.05)
        seconds = time.monotonic() - started
        rss = peak_rss(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    return {"seconds": seconds, "peak_rss_mb": rss / 1e6}


def etcdctl_reads(endpoint: str, first: int, top: int) -> float:
    """Seconds until ``etcdctl watch`` from ``first`` has received revision ``top``."""
    argv = [str(etcd_35().etcdctl), "--endpoints", endpoint, "watch", "--prefix", "", f"--rev={first}", "-w", "json"]
    started = time.monotonic()
    with spawned(argv, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            events = json.loads(line).get("Events") or []
            if events and events[-1]["kv"]["mod_revision"] >= top:
                return time.monotonic() - started
    raise SystemExit(f"etcdctl watch ended before revision {top}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--puts", type=int, default=200_000, help="puts written while capture is away")
    parser.add_argument("--keys", type=int, default=50_000, help="distinct keys they go to")
    parser.add_argument("--work", type=work_dir, default=BENCH_WORK / "catchup",
                        help="work dir (etcd, repository; default bench-work/catchup)")
    args = parser.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    env = frozen_source()
    with EtcdCluster(etcd_35(), work / f"etcd-{time.monotonic_ns()}") as cluster:
        endpoint = cluster.first().client_url
        repo_dir = work / f"repo-{time.monotonic_ns()}"
        argv = capture_argv(repo_dir, endpoint, work)
        log = work / "capture.log"  # capture's own log, kept for a run that goes wrong
        with log.open("wb") as errors, spawned(argv, env=env, stdout=subprocess.DEVNULL, stderr=errors) as proc:
            while not list(repo_dir.rglob("chain.json")):
                if proc.poll() is not None:
                    raise SystemExit("capture did not start a chain")
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            proc.wait()
        started = time.monotonic()
        write_backlog(endpoint, args.puts, args.keys)
        written = time.monotonic() - started
        with EtcdClient(ConnectionSettings((endpoint,))) as client:
            top = client.status(endpoint).revision
        first = top - args.puts + 1
        captured = catch_up(argv, env, repo_dir, top, log)
        reference = etcdctl_reads(endpoint, first, top)
    result = {"puts": args.puts, "keys": args.keys, "first_revision": first, "last_revision": top,
              "backlog_written_s": written, "capture_s": captured["seconds"],
              "capture_peak_rss_mb": captured["peak_rss_mb"], "etcdctl_watch_s": reference,
              "capture_over_etcdctl": captured["seconds"] / reference,
              "revisions_per_s_capture": args.puts / captured["seconds"]}
    out = results_dir(work, BENCH_WORK / "catchup") / "bench_catchup.json"
    out.write_text(json.dumps(result, indent=2))
    print("| metric | value |\n| --- | --- |")
    for key, value in result.items():
        print(f"| {key} | {round(value, 3) if isinstance(value, float) else value} |")


if __name__ == "__main__":
    on_termination()  # SIGTERM cleans up like Ctrl-C
    main()

"""The agent capturing and packing in one process: its memory and the RPO while a pass runs.

``lifeboat agent`` (a child process, capture enabled, a backup every minute, and after each
backup a pack pass with ``capture.pack-min-age 30s`` and ``capture.pack-delete-after 60s`` so
that packs and deletions both happen within a run) against one etcd 3.5.1 on loopback. The
load, in this process:

1. **quiet** (``--quiet-seconds``, default 150): a few Kubernetes-like writes a second
   (``--quiet-rate``, default 30: node leases of 400 B, Events of 800 B on leases, pods of
   3-6 KiB), so capture closes a small segment every second: what packing is for;
2. **busy** (``--busy-seconds``, default 60): 1 KiB values at ``--busy-rate`` (default 2,000
   writes/s), so a pass runs while capture commits large segments;
3. **quiet** again (``--tail-seconds``, default 40).

Each run is made once with ``capture.pack: true`` and once with ``false`` (``--rounds`` pairs,
alternating), to a local directory repository (commit times are the segment files' mtimes) or
to SeaweedFS (``--store s3``; no RPO: its listing dates objects to the second). Measured:

* the agent's **peak RSS** (``VmHWM``) and its resident set sampled every 0.2 s, with the
  peak inside the pack passes that did something (from the ``backup_committed`` event to
  ``packed``/``pack_failed`` in its JSON log: the backup's prune and the pass);
* the **RPO** of every write (acknowledged by etcd to committed in a segment; the earliest
  segment holding its revision, each segment's commit time noted when first seen, every
  0.5 s, as passes delete segments a pack holds), p50 / p99 / max, for the whole run and for the writes
  acknowledged while a pass ran;
* what the passes did (packs, segments packed and deleted), from the log.

Results go to ``bench-work/bench_agent_pack-<store>.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from benchmarks.bench_backup import frozen_source  # noqa: E402
from benchmarks.bench_capture import LIFEBOAT, Load, load, peak_rss, percentile, segment_commits  # noqa: E402
from benchmarks.dataset import BENCH_WORK, _kube_like, results_dir, work_dir  # noqa: E402
from benchmarks.teardown import on_termination, spawned  # noqa: E402
from lifeboat.etcd import ConnectionSettings, EtcdClient  # noqa: E402
from tests.support.binaries import etcd_35, weed  # noqa: E402
from tests.support.etcd import EtcdCluster  # noqa: E402
from tests.support.seaweed import SeaweedServer  # noqa: E402

Write = tuple[float, int, float]  # (ack wall time, revision, latency)


def quiet_load(endpoint: str, rate: float, seconds: float, seed: int) -> list[Write]:
    """Kubernetes-like writes at ``rate`` a second from one thread: node leases, Events on a lease, pods."""
    rng = random.Random(seed)
    values = {size: [_kube_like(rng, size) for _ in range(16)] for size in (400, 800, 3000, 6000)}
    writes: list[Write] = []
    with EtcdClient(ConnectionSettings((endpoint,))) as client:
        lease = client.lease_grant(3600)
        start = time.monotonic()
        i = 0
        while (due := start + i / rate) - start < seconds:
            if (pause := due - time.monotonic()) > 0:
                time.sleep(pause)
            roll = rng.random()
            if roll < 0.5:
                key, value, on = f"/registry/leases/kube-node-lease/node-{rng.randrange(50):03d}", values[400], 0
            elif roll < 0.8:
                key, value, on = f"/registry/events/bench/pod-{i:08d}", values[800], lease
            else:
                key, value, on = f"/registry/pods/bench/pod-{rng.randrange(500):04d}", values[rng.choice((3000, 6000))], 0
            sent = time.monotonic()
            revision = client.put(key, rng.choice(value) + os.urandom(8).hex().encode(), lease=on)
            writes.append((time.time(), revision, time.monotonic() - sent))
            i += 1
    return writes


def agent_config(path: Path, endpoint: str, repo: str, spool: Path, pack: bool) -> Path:
    path.write_text(yaml.safe_dump({
        "cluster": "bench",
        "etcd": {"endpoints": endpoint},
        "repository": {"url": repo},
        "backup": {"capture-files": False},
        "schedules": {"backup": "* * * * *"},
        "agent": {"listen": "127.0.0.1:0", "log-format": "json"},
        "capture": {"enabled": True, "spool-dir": str(spool), "pack": pack,
                    "pack-min-age": "30s", "pack-delete-after": "60s"},
    }))
    return path


def sample_rss(pid: int, stop: threading.Event, into: list[tuple[float, int]]) -> None:
    while not stop.wait(0.2):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    into.append((time.time(), int(line.split()[1]) * 1024))
        except FileNotFoundError:
            return


def watch_commits(repo_dir: Path, stop: threading.Event, into: dict[str, tuple[int, int, float]]) -> None:
    """Each segment's commit time as first seen: a pass deletes what a pack holds, and the pack,
    written later, would otherwise stand for their revisions."""
    while not stop.wait(0.5):
        for path in repo_dir.rglob("segments/*.zst"):
            if path.name not in into:
                first, last = path.name.split("-")[:2]
                try:
                    into[path.name] = (int(first), int(last), path.stat().st_mtime)
                except FileNotFoundError:
                    continue


def pass_windows(events: list[dict[str, object]]) -> list[tuple[float, float, dict[str, object]]]:
    """(start, end, the event that ended it) of each pack pass that packed or deleted something:
    from a backup's commit to its pass's log line (a pass with nothing to do logs nothing)."""
    windows = []
    start: float | None = None
    for event in events:
        at = datetime.fromisoformat(str(event["time"])).timestamp()
        if event.get("event") == "backup_committed":
            start = at
        elif event.get("event") in ("packed", "pack_failed") and start is not None:
            windows.append((start, at, event))
            start = None
    return windows


def rpo(writes: list[Write], commits: list[tuple[int, int, float]]) -> list[tuple[float, float]]:
    """(ack time, delay to the earliest commit of a segment holding it) per write."""
    out = []
    for acked, revision, _ in writes:
        times = [committed for first, last, committed in commits if first <= revision <= last]
        if not times:
            raise SystemExit(f"revision {revision} is in no committed segment")
        out.append((acked, min(times) - acked))
    return out


def one_run(work: Path, env: dict[str, str], endpoint: str, repo: str, repo_dir: Path | None, pack: bool,
            args: argparse.Namespace) -> dict[str, object]:
    tag = f"{'pack' if pack else 'nopack'}-{time.monotonic_ns()}"
    config = agent_config(work / f"agent-{tag}.yaml", endpoint, repo, work / f"spool-{tag}", pack)
    log_path = work / f"agent-{tag}.log"
    samples: list[tuple[float, int]] = []
    done = threading.Event()
    writes: list[Write] = []
    commits: dict[str, tuple[int, int, float]] = {}
    with log_path.open("w") as log, spawned(LIFEBOAT + ["agent", "--config", str(config)], env=env,
                                             stdout=subprocess.DEVNULL, stderr=log) as proc:
        sampler = threading.Thread(target=sample_rss, args=(proc.pid, done, samples), daemon=True)
        sampler.start()
        if repo_dir is not None:
            threading.Thread(target=watch_commits, args=(repo_dir, done, commits), daemon=True).start()
        time.sleep(5)  # its start, the election, capture's base backup
        began = time.time()
        writes += quiet_load(endpoint, args.quiet_rate, args.quiet_seconds, 1)
        writes += load(endpoint, Load(args.busy_rate, args.busy_seconds, 8))
        writes += quiet_load(endpoint, args.quiet_rate, args.tail_seconds, 2)
        top = max(w[1] for w in writes)
        if repo_dir is not None:
            deadline = time.monotonic() + 60
            while not any(last >= top for _, last, _ in segment_commits(repo_dir)) and time.monotonic() < deadline:
                time.sleep(0.2)
        peak = peak_rss(proc.pid)
        done.set()
        proc.terminate()
        code = proc.wait(60)
    events = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    windows = pass_windows(events)
    in_pass = [rss for at, rss in samples for start, end, _ in windows if start <= at <= end]
    result: dict[str, object] = {
        "pack": pack, "exit": code, "peak_rss": peak, "seconds": time.time() - began,
        "peak_rss_in_passes": max(in_pass, default=0), "passes": len(windows),
        "pass_seconds": [round(end - start, 2) for start, end, _ in windows],
        "packed": [e.get("message") for _, _, e in windows if e],
        "warnings": [e.get("message") for e in events if e.get("level") in ("error", "warning")],
        "writes": len(writes),
    }
    if repo_dir is not None:
        delays = rpo(writes, sorted({*commits.values(), *segment_commits(repo_dir)}))
        during = [d for acked, d in delays if any(start <= acked <= end for start, end, _ in windows)]
        all_ = [d for _, d in delays]
        result["rpo"] = {"p50": percentile(all_, 50), "p99": percentile(all_, 99), "max": max(all_)}
        result["rpo_in_passes"] = ({"n": len(during), "p50": percentile(during, 50), "p99": percentile(during, 99),
                                    "max": max(during)} if during else None)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=("dir", "s3"), default="dir")
    parser.add_argument("--rounds", type=int, default=1, help="pairs of runs, packing and not (default 1)")
    parser.add_argument("--quiet-rate", type=float, default=30.0)
    parser.add_argument("--quiet-seconds", type=float, default=150.0)
    parser.add_argument("--busy-rate", type=float, default=2000.0)
    parser.add_argument("--busy-seconds", type=float, default=60.0)
    parser.add_argument("--tail-seconds", type=float, default=40.0)
    parser.add_argument("--rev", default="HEAD", help="the commit whose lifeboat runs (default HEAD)")
    parser.add_argument("--work", type=work_dir, default=BENCH_WORK / "agent-pack")
    args = parser.parse_args()
    on_termination()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    env = frozen_source(args.rev)
    results: list[dict[str, Any]] = []
    with EtcdCluster(etcd_35(), work / f"etcd-{time.monotonic_ns()}") as etcd:
        endpoint = etcd.endpoints[0]
        for round_ in range(args.rounds):
            for pack in (True, False) if round_ % 2 == 0 else (False, True):
                if args.store == "dir":
                    repo_dir = work / f"repo-{time.monotonic_ns()}"
                    results.append(one_run(work, env, endpoint, f"file://{repo_dir}", repo_dir, pack, args))
                else:
                    with SeaweedServer(weed(), work / f"seaweed-{time.monotonic_ns()}") as seaweed:
                        s3 = seaweed.s3()
                        results.append(one_run(work, {**env, **s3.env()}, endpoint, f"s3://{s3.bucket}/agent",
                                               None, pack, args))
                print(json.dumps(results[-1]), flush=True)
    out = results_dir(work, BENCH_WORK / "agent-pack") / f"bench_agent_pack-{args.store}.json"
    out.write_text(json.dumps(results, indent=1))
    print("| pack | peak RSS | peak RSS in passes | passes (s) | RPO p50 / p99 / max | RPO in passes p99 / max |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        rpo_all = r.get("rpo") or {}
        during = r.get("rpo_in_passes") or {}
        print(f"| {r['pack']} | {r['peak_rss'] / 1e6:.1f} MB | {r['peak_rss_in_passes'] / 1e6:.1f} MB | "
              f"{r['pass_seconds']} | {rpo_all.get('p50', 0):.2f} / {rpo_all.get('p99', 0):.2f} / "
              f"{rpo_all.get('max', 0):.2f} s | {during.get('p99', 0):.2f} / {during.get('max', 0):.2f} s |")


if __name__ == "__main__":
    main()

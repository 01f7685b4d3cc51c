"""Capture's memory while the object store hangs or is down, and the chain it leaves.

One etcd 3.5.1 and one SeaweedFS on loopback; ``lifeboat capture`` (a child process, the code
of ``--rev``, default HEAD) writes to SeaweedFS's S3 while a load generator writes 1 KiB values
at a steady rate (default 2,000 writes/s). After ``--before`` seconds the store goes away for
``--outage`` seconds: ``hang`` stops SeaweedFS with SIGSTOP (connections are accepted by the
kernel and never answered, as a wedged store or a black-holed network does), ``down`` kills it
(connections refused) and starts it again. The load goes on for ``--after`` seconds more, then
the benchmark waits until the chain reaches the last revision written.

Measured: capture's peak RSS (its ``VmHWM``, and the largest ``VmRSS`` sampled every 0.25 s,
with the time it was seen), and the chain: one chain, no gap, no overlap, ending at the last
revision written. ``--rev main,HEAD`` runs each revision in turn against the same servers,
for an A/B. Results go to ``bench-work/bench_capture_outage-<mode>.json`` (in the
``--work`` dir when one other than the default is given) and a table on stdout.
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
from benchmarks.bench_capture import LIFEBOAT, Load, load  # noqa: E402
from benchmarks.dataset import BENCH_WORK, results_dir, work_dir  # noqa: E402
from lifeboat.catalog.chains import ChainStore  # noqa: E402
from lifeboat.store import open_store  # noqa: E402
from tests.support.binaries import etcd_35, weed  # noqa: E402
from tests.support.etcd import EtcdCluster  # noqa: E402
from tests.support.seaweed import SeaweedServer  # noqa: E402

SAMPLE = 0.25


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def outage_round(rev: str, endpoint: str, seaweed: SeaweedServer, work: Path, args: argparse.Namespace) -> dict[str, object]:
    s3 = seaweed.s3()
    url = f"s3://{s3.bucket}/outage-{rev}-{time.monotonic_ns()}"
    env = {**frozen_source(rev), **s3.env()}
    proc = subprocess.Popen(LIFEBOAT + ["capture", "--repo", url, "--cluster", "bench", "--endpoints", endpoint,
                                        "--no-files", "--spool-dir", str(work / f"spool-{time.monotonic_ns()}")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    chains = ChainStore(open_store(url, s3.env()))
    deadline = time.monotonic() + 60
    while not chains.chains("bench"):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"capture did not start a chain: {proc.stderr.read() if proc.stderr else ''!r}")
        time.sleep(0.2)
    began = time.monotonic()
    peak = {"rss_kib": 0, "at": 0.0}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            rss = status_kib(proc.pid, "VmRSS")
            if rss > peak["rss_kib"]:
                peak.update(rss_kib=rss, at=round(time.monotonic() - began, 1))
            time.sleep(SAMPLE)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    writes: list[tuple[float, int, float]] = []
    loader = threading.Thread(target=lambda: writes.extend(
        load(endpoint, Load(args.rate, args.before + args.outage + args.after, args.threads))))
    loader.start()
    time.sleep(args.before)
    if args.mode == "hang":
        assert seaweed.process is not None
        os.killpg(seaweed.process.pid, signal.SIGSTOP)
        time.sleep(args.outage)
        os.killpg(seaweed.process.pid, signal.SIGCONT)
    else:
        seaweed.stop()
        time.sleep(args.outage)
        seaweed.start()
    loader.join()
    top = max(r for _, r, _ in writes)
    deadline = time.monotonic() + args.catch_up
    caught_up = None
    while time.monotonic() < deadline:
        listing = chains.chains("bench")
        if listing and listing[-1].segments and listing[-1].segments[-1].last_revision >= top:
            caught_up = round(time.monotonic() - began, 1)
            break
        time.sleep(1)
    hwm = status_kib(proc.pid, "VmHWM")
    sampling.set()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    listing = chains.chains("bench")
    ranges = [(s.first_revision, s.last_revision) for c in listing for s in c.segments]
    return {
        "rev": rev, "mode": args.mode, "outage_s": args.outage, "writes": len(writes),
        "peak_rss_mb": round(hwm * 1024 / 1e6, 1), "largest_sampled_rss_mb": round(peak["rss_kib"] * 1024 / 1e6, 1),
        "largest_sampled_at_s": peak["at"], "caught_up_at_s": caught_up,
        "chains": len(listing), "gaps": sum(1 for c in listing if c.gap is not None),
        "contiguous": all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:])),
        "last_revision": ranges[-1][1] if ranges else None, "top_written": top,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2000.0, help="target writes per second")
    parser.add_argument("--threads", type=int, default=16, help="load generator threads")
    parser.add_argument("--before", type=float, default=15.0, help="seconds of load before the outage")
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the store is away")
    parser.add_argument("--after", type=float, default=15.0, help="seconds of load after it")
    parser.add_argument("--catch-up", type=float, default=300.0, help="how long to wait for the chain to catch up")
    parser.add_argument("--mode", choices=("hang", "down"), default="hang")
    parser.add_argument("--rev", default="HEAD", help="comma-separated revisions to measure in turn (A/B)")
    parser.add_argument("--work", type=work_dir, default=BENCH_WORK / "capture-outage",
                        help="work dir (etcd, SeaweedFS; default bench-work/capture-outage)")
    args = parser.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    results = []
    load_before = os.getloadavg()[0]
    with EtcdCluster(etcd_35(), work / f"etcd-{time.monotonic_ns()}") as cluster, \
            SeaweedServer(weed(), work / f"seaweed-{time.monotonic_ns()}") as seaweed:
        endpoint = cluster.first().client_url
        for rev in args.rev.split(","):
            results.append(outage_round(rev, endpoint, seaweed, work, args))
            print(json.dumps(results[-1]), flush=True)
    result = {"load_average_1m_before_after": f"{load_before:.1f} / {os.getloadavg()[0]:.1f}", "rounds": results}
    out_dir = results_dir(work, BENCH_WORK / "capture-outage")
    (out_dir / f"bench_capture_outage-{args.mode}.json").write_text(json.dumps(result, indent=2))
    keys = list(results[0])
    print("| " + " | ".join(keys) + " |\n|" + " --- |" * len(keys))
    for r in results:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    print(f"load average (1 min) before / after: {result['load_average_1m_before_after']}")


if __name__ == "__main__":
    main()

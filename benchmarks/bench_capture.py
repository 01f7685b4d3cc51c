"""Continuous capture under load: RPO, effect on etcd's put latency, capture's memory, PITR speed.

One etcd 3.5.1 on loopback. Rounds alternate "no capture", "watch drain" (a child process
that only reads the same whole-keyspace watch lifeboat uses and drops every event: the least
a Python watcher costs etcd), "etcdctl watch" (the reference tool, Go: ``etcdctl watch`` of
the whole keyspace from the same revision, its output to /dev/null), "capture"
(``lifeboat capture`` as a child process, to a local repository, default flush interval of
1 s: it reads etcd in passes, a watch every half flush interval from the next revision not
read, read up to the revision etcd was at and cancelled) and "capture, live watch" (the same
with ``capture.watch: live``: one watch that etcd sends each revision as it commits, as the
drain and etcdctl are). ``--nice N`` runs the watchers at that niceness (the systemd units of
``deploy/`` set ``Nice=10``); etcd and the load generator stay at 0. In each round a
load generator in this process writes 1 KiB values at a steady target rate (default 2,000
writes/s) for ``--seconds``, from several threads (each over 5,000 keys of its own), and
records each put's acknowledgement time, revision and latency. ``--value-bytes`` and
``--keys`` give other shapes: ``--rate 100 --value-bytes 65536 --keys 4`` is few large values.
Measured:

* **RPO**: for every write of a capture round (either kind), the time from etcd's acknowledgement to the
  moment the segment holding its revision was committed (the segment file's mtime; the local
  store writes a temp file and renames it into place). p50 / p99 / max.
* **put latency** with and without capture (p50 / p99), as a ratio of the two; the same for
  the drain and for etcdctl, which says what any watcher costs etcd on this machine.
* **capture's peak RSS** (the child's ``VmHWM``, read until it exits: ``wait4``'s ``ru_maxrss``
  would carry this benchmark's own RSS into the child's, see ``benchmarks/rss.py``; and its peak once its base backup was
  taken, before the load started, so what capturing itself adds shows apart) and its **CPU**
  (user + system seconds per second of load, so 0.25 = a quarter of one core), the same for
  the watch drain.
* **PITR apply rate**: the captured events replayed onto the base snapshot up to the last
  revision (``build_point_snapshot`` with the base already fetched), events per second.

Results go to ``bench-work/bench_capture-<flush>-nice<n>[-<value bytes>B-<keys>keys].json`` (in the ``--work`` dir when one
other than the default is given) and a Markdown table on stdout. The machine
is shared: run alternating rounds and read the numbers with that in mind.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_backup import frozen_source  # noqa: E402
from benchmarks.dataset import BENCH_WORK, results_dir, work_dir  # noqa: E402
from lifeboat.catalog.repository import BackupRepository  # noqa: E402
from lifeboat.etcd import ConnectionSettings, EtcdClient  # noqa: E402
from lifeboat.pitr import PointTarget, build_point_snapshot, find_point  # noqa: E402
from lifeboat.store import open_store  # noqa: E402
from lifeboat.verify.backup import verify_backup  # noqa: E402
from tests.support.binaries import etcd_35  # noqa: E402
from tests.support.etcd import EtcdCluster  # noqa: E402
from benchmarks.teardown import on_termination, spawned  # noqa: E402

LIFEBOAT = [sys.executable, "-m", "lifeboat.cli.main"]


@dataclass(frozen=True)
class Load:
    """The writes of a round: ``rate`` puts/s for ``seconds`` by ``threads`` threads, each over
    ``keys`` keys of its own, every value ``value_bytes`` random bytes (the same value each put)."""

    rate: float
    seconds: float
    threads: int
    value_bytes: int = 1024
    keys: int = 5000


def load(endpoint: str, shape: Load) -> list[tuple[float, int, float]]:
    """Write as ``shape`` says; (ack wall time, revision, latency) per put."""
    results: list[tuple[float, int, float]] = []
    lock = threading.Lock()
    start = time.monotonic() + 0.2
    rate, seconds, threads = shape.rate, shape.seconds, shape.threads
    per_thread = rate / threads
    value = os.urandom(shape.value_bytes)

    def worker(n: int) -> None:
        mine: list[tuple[float, int, float]] = []
        with EtcdClient(ConnectionSettings((endpoint,))) as client:
            i = 0
            while True:
                due = start + i / per_thread
                if due - start >= seconds:
                    break
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                sent = time.monotonic()
                revision = client.put(f"/registry/bench/{n}/{i % shape.keys}", value)
                mine.append((time.time(), revision, time.monotonic() - sent))
                i += 1
        with lock:
            results.extend(mine)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return results


def achieved_rate(writes: list[tuple[float, int, float]], seconds: float) -> float:
    """Writes per second a round really made: the load writes ``rate`` x ``seconds`` puts
    whatever etcd's pace, so when etcd (or the machine) cannot keep up it takes longer than
    ``seconds``, from its first acknowledgement to its last."""
    acked = [w[0] for w in writes]
    return len(writes) / max(seconds, max(acked) - min(acked))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def segment_commits(repo_dir: Path) -> list[tuple[int, int, float]]:
    found = []
    for path in repo_dir.rglob("segments/*.zst"):  # .seg.zst (format 2) or .jsonl.zst (1)
        first, last = path.name.split("-")[:2]
        found.append((int(first), int(last), path.stat().st_mtime))
    return sorted(found)


def rpo(writes: list[tuple[float, int, float]], commits: list[tuple[int, int, float]]) -> list[float]:
    delays = []
    for acked, revision, _latency in writes:
        for first, last, committed in commits:
            if first <= revision <= last:
                delays.append(committed - acked)
                break
        else:
            raise SystemExit(f"revision {revision} is in no committed segment")
    return delays


DRAIN = """
import sys, time
from lifeboat.etcd import ConnectionSettings, EtcdClient
with EtcdClient(ConnectionSettings((sys.argv[1],))) as client:
    feed = client.follow(int(sys.argv[2]))
    print("ready", flush=True)
    while not feed.ended:
        feed.take(0.5)
"""


def niced(argv: list[str], nice: int) -> list[str]:
    return ["nice", "-n", str(nice), *argv] if nice else argv


def watcher_round(kind: str, endpoint: str, shape: Load, env: dict[str, str], nice: int) -> dict[str, object]:
    """Load while a bare watcher of the whole keyspace runs: "drain" (Python, lifeboat's live
    watch that drops every event) or "etcdctl" (the reference tool, its output discarded)."""
    with EtcdClient(ConnectionSettings((endpoint,))) as client:
        start = client.status(endpoint).revision + 1
    if kind == "drain":
        argv = [sys.executable, "-c", DRAIN, endpoint, str(start)]
    else:
        argv = [str(etcd_35().etcdctl), "--endpoints", endpoint, "watch", "--prefix", "", f"--rev={start}"]
    output = subprocess.PIPE if kind == "drain" else subprocess.DEVNULL
    with spawned(niced(argv, nice), env=env, stdout=output, stderr=subprocess.PIPE, text=True) as proc:
        if proc.stdout is not None:
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("the watch drain did not start")
        else:
            time.sleep(1.0)  # etcdctl prints nothing until the first event: give it the time to connect
        if proc.poll() is not None:
            raise SystemExit(f"the {kind} watcher exited with {proc.returncode}")
        began = time.monotonic()
        writes = load(endpoint, shape)
        elapsed = time.monotonic() - began
        rss = peak_rss_until_exit(proc)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {"writes": writes, "cpu": (usage.ru_utime + usage.ru_stime) / elapsed, "rss": rss}


def capture_round(endpoint: str, work: Path, shape: Load, env: dict[str, str], flush: str, nice: int,
                  watch: str = "passes") -> dict[str, object]:
    repo_dir = work / f"repo-{time.monotonic_ns()}"
    config = work / f"capture-{watch}.yaml"
    config.write_text(f"capture:\n  watch: {watch}\n")
    with spawned(niced(LIFEBOAT + ["capture", "--config", str(config), "--repo", str(repo_dir), "--cluster", "bench",
                                   "--endpoints", endpoint, "--no-files", "--spool-dir", str(work / "spool"),
                                   "--flush-interval", flush], nice),
                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        deadline = time.monotonic() + 60
        while not list(repo_dir.rglob("chain.json")):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("capture did not start a chain")
            time.sleep(0.1)
        base_rss = peak_rss(proc.pid)  # its base backup done: the peak so far is the backup's
        before = _cpu_seconds(proc.pid)
        began = time.monotonic()
        writes = load(endpoint, shape)
        top = max(r for _, r, _ in writes)
        while not any(last >= top for _, last, _ in segment_commits(repo_dir)):
            time.sleep(0.1)
        cpu = (_cpu_seconds(proc.pid) - before) / (time.monotonic() - began)
        rss = peak_rss_until_exit(proc)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    delays = rpo(writes, segment_commits(repo_dir))
    return {"writes": writes, "delays": delays, "rss": rss, "repo": repo_dir, "top": top,
            "cpu": cpu, "base_rss": base_rss}


def peak_rss(pid: int) -> int:
    """A running process's peak resident set so far, in bytes (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise SystemExit(f"no VmHWM for process {pid}")


def peak_rss_until_exit(proc: subprocess.Popen[Any]) -> int:
    """Stop a child with SIGTERM; its peak resident set (``VmHWM``), read before and then every
    10 ms until it exits (the caller reaps it, so its /proc entry stays until then)."""
    peak = peak_rss(proc.pid)
    proc.send_signal(signal.SIGTERM)
    while True:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            return peak
        hwm = [line for line in status.splitlines() if line.startswith("VmHWM:")]
        if not hwm:  # a zombie: it has exited and has no memory left to read
            return peak
        peak = max(peak, int(hwm[0].split()[1]) * 1024)
        time.sleep(0.01)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process so far (start-up and base backup excluded by difference)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pitr_rate(repo_dir: Path, revision: int, work: Path) -> dict[str, float]:
    repo = BackupRepository.open(open_store(str(repo_dir), dict(os.environ)))
    point = find_point(repo, "bench", PointTarget(revision=revision), None)
    base = work / "pitr-base.db"
    verify_backup(repo, point.base, None, tmp_dir=work, keep_snapshot=base)
    started = time.monotonic()
    built = build_point_snapshot(repo, point, None, work / "pitr.db", base_snapshot=base)
    seconds = time.monotonic() - started
    return {"events": built.events, "seconds": seconds, "events_per_second": built.events / seconds}


def summary(rounds: list[dict[str, object]], shape: Load) -> dict[str, object]:
    rate, seconds = shape.rate, shape.seconds
    plain = [w for r in rounds if r["mode"] == "plain" for w in r["writes"]]  # type: ignore[attr-defined]
    captured = [r for r in rounds if r["mode"] == "capture"]
    drained = [r for r in rounds if r["mode"] == "drain"]
    reference = [r for r in rounds if r["mode"] == "etcdctl"]
    live = [r for r in rounds if r["mode"] == "capture-live"]
    lat_live = [w[2] for r in live for w in r["writes"]]  # type: ignore[attr-defined]
    delays_live = [d for r in live for d in r["delays"]]  # type: ignore[attr-defined]
    lat_plain = [w[2] for w in plain]
    lat_drain = [w[2] for r in drained for w in r["writes"]]  # type: ignore[attr-defined]
    lat_cap = [w[2] for r in captured for w in r["writes"]]  # type: ignore[attr-defined]
    lat_ref = [w[2] for r in reference for w in r["writes"]]  # type: ignore[attr-defined]
    delays = [d for r in captured for d in r["delays"]]  # type: ignore[attr-defined]
    achieved = [achieved_rate(r["writes"], seconds) for r in rounds]  # type: ignore[arg-type]
    achieved_capture = [achieved_rate(r["writes"], seconds) for r in captured]  # type: ignore[arg-type]
    return {
        "target_rate": rate, "achieved_rate_min": min(achieved), "achieved_rate_median": statistics.median(achieved),
        "achieved_rate_capture_min": min(achieved_capture),
        "rpo_p50": percentile(delays, 50), "rpo_p99": percentile(delays, 99), "rpo_max": max(delays),
        "put_p50_plain": percentile(lat_plain, 50), "put_p99_plain": percentile(lat_plain, 99),
        "put_p50_capture": percentile(lat_cap, 50), "put_p99_capture": percentile(lat_cap, 99),
        "put_p50_drain": percentile(lat_drain, 50), "put_p99_drain": percentile(lat_drain, 99),
        "put_p50_ratio": percentile(lat_cap, 50) / percentile(lat_plain, 50),
        "put_p99_ratio": percentile(lat_cap, 99) / percentile(lat_plain, 99),
        "put_p50_ratio_drain": percentile(lat_drain, 50) / percentile(lat_plain, 50),
        "put_p99_ratio_drain": percentile(lat_drain, 99) / percentile(lat_plain, 99),
        "put_p50_etcdctl": percentile(lat_ref, 50), "put_p99_etcdctl": percentile(lat_ref, 99),
        "put_p50_ratio_etcdctl": percentile(lat_ref, 50) / percentile(lat_plain, 50),
        "put_p99_ratio_etcdctl": percentile(lat_ref, 99) / percentile(lat_plain, 99),
        "put_p50_ratio_capture_vs_drain": percentile(lat_cap, 50) / percentile(lat_drain, 50),
        "put_p50_ratio_capture_vs_etcdctl": percentile(lat_cap, 50) / percentile(lat_ref, 50),
        "put_p50_capture_live": percentile(lat_live, 50), "put_p99_capture_live": percentile(lat_live, 99),
        "put_p50_ratio_capture_live": percentile(lat_live, 50) / percentile(lat_plain, 50),
        "put_p99_ratio_capture_live": percentile(lat_live, 99) / percentile(lat_plain, 99),
        "rpo_p50_capture_live": percentile(delays_live, 50), "rpo_p99_capture_live": percentile(delays_live, 99),
        "capture_live_cpu_cores": statistics.median(float(str(r["cpu"])) for r in live),
        "capture_cpu_cores": statistics.median(float(str(r["cpu"])) for r in captured),
        "drain_cpu_cores": statistics.median(float(str(r["cpu"])) for r in drained),
        "etcdctl_cpu_cores": statistics.median(float(str(r["cpu"])) for r in reference),
        # Each round's put p50 over its cycle's round without a watcher, median over the cycles:
        # paired, so a drift of the machine between cycles cancels out.
        **{f"put_p50_ratio_{mode}_median_of_cycles": cycle_ratio(rounds, mode)
           for mode in ("capture", "capture-live", "drain", "etcdctl")},
        "capture_peak_rss_mb": max(int(r["rss"]) for r in captured) / 1e6,  # type: ignore[call-overload]
        # The peak by the end of its base backup, before the load: the rest is capturing's own.
        "capture_peak_rss_after_base_mb": max(int(r["base_rss"]) for r in captured) / 1e6,  # type: ignore[call-overload]
    }


def cycle_ratio(rounds: list[dict[str, Any]], mode: str) -> float:
    """The median over cycles of ``mode``'s put p50 over the same cycle's plain round's."""
    def p50(r: dict[str, Any]) -> float:
        return percentile([w[2] for w in r["writes"]], 50)
    plain = {r["cycle"]: p50(r) for r in rounds if r["mode"] == "plain"}
    return statistics.median(p50(r) / plain[r["cycle"]] for r in rounds if r["mode"] == mode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2000.0, help="target writes per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="load per round")
    parser.add_argument("--rounds", type=int, default=2,
                        help="(no capture, watch drain, etcdctl watch, capture, capture live) rounds")
    parser.add_argument("--threads", type=int, default=16, help="load generator threads")
    parser.add_argument("--value-bytes", type=int, default=1024, help="size of every value (default 1 KiB)")
    parser.add_argument("--keys", type=int, default=5000, help="keys each load thread writes over (default 5,000)")
    parser.add_argument("--flush-interval", default="1s", help="capture.flush-interval (default 1s)")
    parser.add_argument("--nice", type=int, default=0, help="niceness of the watchers (default 0: etcd's own)")
    parser.add_argument("--work", type=work_dir, default=BENCH_WORK / "capture",
                        help="work dir (etcd, repositories; default bench-work/capture)")
    args = parser.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    env = frozen_source()
    rounds: list[dict[str, object]] = []
    shape = Load(args.rate, args.seconds, args.threads, args.value_bytes, args.keys)
    with EtcdCluster(etcd_35(), work / f"etcd-{time.monotonic_ns()}") as cluster:
        endpoint = cluster.first().client_url
        load_before = os.getloadavg()
        for cycle in range(args.rounds):
            rounds.append({"mode": "plain", "cycle": cycle,
                           "writes": load(endpoint, shape)})
            for kind in ("drain", "etcdctl"):
                rounds.append({"mode": kind, "cycle": cycle, **watcher_round(kind, endpoint, shape, env, args.nice)})
            # The two captures swap places every cycle: a round's place in it moves its latency.
            for watch in ("passes", "live") if cycle % 2 == 0 else ("live", "passes"):
                mode = "capture" if watch == "passes" else "capture-live"
                rounds.append({"mode": mode, "cycle": cycle, **capture_round(endpoint, work, shape, env, args.flush_interval,
                                                                             args.nice, watch)})
        load_after = os.getloadavg()
        last = rounds[-1]
        pitr = pitr_rate(Path(str(last["repo"])), int(str(last["top"])), work)
    result = {"flush_interval": args.flush_interval, "nice": args.nice, "value_bytes": args.value_bytes,
              "keys_per_thread": args.keys,
              **summary(rounds, shape), "pitr": pitr,
              "load_average_1m_before_after": f"{load_before[0]:.1f} / {load_after[0]:.1f}",
              "rounds": [{"mode": r["mode"], "cycle": r["cycle"], "writes": len(r["writes"]),  # type: ignore[arg-type]
                          "put_p50_ms": 1000 * percentile([w[2] for w in r["writes"]], 50),  # type: ignore[attr-defined]
                          **({"peak_rss_mb": int(str(r["rss"])) / 1e6} if "rss" in r else {})} for r in rounds]}
    out_dir = results_dir(work, BENCH_WORK / "capture")
    shaped = "" if (args.value_bytes, args.keys) == (1024, 5000) else f"-{args.value_bytes}B-{args.keys}keys"
    (out_dir / f"bench_capture-{args.flush_interval}-nice{args.nice}{shaped}.json").write_text(json.dumps(result, indent=2))
    print(f"| metric | value |\n| --- | --- |")
    for key, value in result.items():
        if key != "rounds":
            print(f"| {key} | {value if not isinstance(value, float) else round(value, 4)} |")


if __name__ == "__main__":
    on_termination()  # SIGTERM cleans up like Ctrl-C
    main()

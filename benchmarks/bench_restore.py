"""`lifeboat restore` from SeaweedFS S3 side by side with the same restore done by hand.

One ~1 GB Kubernetes-like backup (``benchmarks/dataset.py``, style "kube") is taken once into
a real SeaweedFS S3. Then, alternating, on a kubeadm-like node run by the demo's stand-in for
the kubelet (etcd 3.5.1 over mTLS on loopback):

* by hand: stop etcd, move its data dir aside, download the stored object, ``zstd -d``,
  ``etcdutl snapshot restore`` into a new data dir, start etcd, wait until it answers;
* lifeboat: ``lifeboat restore latest --root NODE`` (which also verifies every checksum and the
  snapshot, moves the old data dir aside, writes the restored data dir itself — what etcdutl
  3.5.1 writes, with the revision bumped by a billion in the same pass —, checks the restored
  keyspace, and waits for the member to serve the bumped revision and refuse older watches);
  with ``--with-tool`` also ``--restore-with tool`` (etcdutl writes the data dir, lifeboat bumps
  after it), the A/B of lifeboat's own writer.

Each lifeboat step's start, wall time and CPU seconds (of lifeboat and the tool it runs) go to
stderr.

Both end with a started, healthy member. Each case starts on a settled machine (:func:`settle`:
the restore before it leaves etcd compacting, dirty pages to write, and on a VM freed memory
its host has not taken back yet). Each case's wall time, CPU (user + system of its
processes: lifeboat with the ``etcdutl`` it starts; by hand each of its commands) and peak RSS
(``benchmarks/rss.py``) are recorded, with the load average after every round. Two peaks: the
``lifeboat`` process's own (by hand: the largest command's own), and its process tree's, which
includes ``etcdutl``'s mapping of the whole restored db (etcd's backend maps it with
``MAP_POPULATE``: about the db's size in file pages, the same by hand). The etcd member itself,
the same in both cases, is in neither. Results go to ``bench-work/bench_restore.json`` (in the
``--work`` dir when one other than the default is given).
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
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import rss  # noqa: E402
from benchmarks.bench_backup import LIFEBOAT, frozen_source, serve  # noqa: E402
from benchmarks.dataset import BENCH_WORK, make_snapshot, results_dir, work_dir  # noqa: E402
from benchmarks.teardown import on_termination  # noqa: E402
from lifeboat.demo.kubelet import DemoKubelet  # noqa: E402
from lifeboat.demo.node import demo_member, make_node  # noqa: E402
from lifeboat.demo.pki import Pki, make_pki  # noqa: E402
from lifeboat.etcd.local import LocalEtcd, ReservedPort  # noqa: E402
from lifeboat.store import open_store  # noqa: E402
from tests.support.binaries import etcd_35, tool, weed  # noqa: E402
from tests.support.seaweed import SeaweedServer  # noqa: E402


def take_backup(snapshot: Path, work: Path, env: dict[str, str], repo: str) -> dict[str, object]:
    member = serve(snapshot, work / "source")
    try:
        out = subprocess.run([*LIFEBOAT, "backup", f"--endpoints={member.client_url}", *member.tls_flags(),
                              "--no-files", "--repo", repo, "--cluster", "bench", "-o", "json"],
                             env=env, capture_output=True, text=True, check=True).stdout
    finally:
        member.stop()
    manifest: dict[str, object] = json.loads(out)
    return manifest


def aws_cli() -> Path | None:
    """The AWS CLI: on PATH, or installed for benchmarks with
    ``python3 -m venv bench-work/awscli-venv && bench-work/awscli-venv/bin/pip install awscli``."""
    found = shutil.which("aws")
    beside = BENCH_WORK / "awscli-venv" / "bin" / "aws"
    return Path(found) if found else beside if beside.exists() else None


BY_HAND = ("by hand (stop, " + ("aws s3 cp" if aws_cli() else "single-stream download")
           + ", zstd -d, etcdutl restore, start)")


# The same work as by hand: no revision bump (etcdutl 3.5.1 has none; by hand nobody adds one).
NO_BUMP = "lifeboat restore latest --bump-revision 0"
# The default: the revision raised by a billion, by lifeboat's own writer as it writes the data dir.
BUMPED = "lifeboat restore latest (revision bumped)"
# The same with etcdutl 3.5.1 writing the data dir (--restore-with tool) and lifeboat bumping after it.
BUMPED_TOOL = "lifeboat restore latest --restore-with tool (revision bumped)"


@dataclass
class Run:
    """One restore: wall seconds, CPU seconds of its processes, and their peak RSS in bytes."""

    wall_s: float
    cpu_s: float = 0.0
    own_peak_bytes: int = 0
    tree_peak_bytes: int = 0

    def add(self, measured: rss.Measured) -> None:
        if measured.exit_code != 0:
            raise SystemExit(f"a by-hand command failed: {measured.output.decode(errors='replace')[-2000:]}")
        self.cpu_s += measured.cpu_s
        self.own_peak_bytes = max(self.own_peak_bytes, measured.own_peak_bytes)
        self.tree_peak_bytes = max(self.tree_peak_bytes, measured.peak_bytes)


def wait_answers(etcd: LocalEtcd, pki: Pki, timeout: float = 120) -> None:
    release = etcd_35()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run([str(release.etcdctl), f"--endpoints={etcd.client_url}", f"--cacert={pki.ca}",
                               f"--cert={pki.client.cert}", f"--key={pki.client.key}",
                               "endpoint", "health", "--command-timeout=2s"], capture_output=True)
        if done.returncode == 0:
            return
        time.sleep(0.05)
    raise SystemExit("etcd did not become healthy")


# Linux's free page reporting (virtio-balloon): a VM hands memory freed for a while back to its
# host, and the next touch of it faults it in again (on the 2-core machine about 3 s per GiB).
PAGE_REPORTING = Path("/sys/module/page_reporting/parameters")


def memory_handed_back_kib() -> int | None:
    """KiB of freed memory this VM has handed back to its host so far (None: no reporting)."""
    try:
        return int((PAGE_REPORTING / "reported_kib").read_text())
    except (OSError, ValueError):
        return None


def stolen_s() -> float:
    """CPU seconds the hypervisor has taken from this VM's cores so far, all cores together
    (``steal`` in ``/proc/stat``): what a case lost to other guests, when read around it."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def memory_reporting() -> str:
    """How this machine treats freed memory, for the results: the reporting order, or "none"."""
    try:
        order = int((PAGE_REPORTING / "page_reporting_order").read_text())
    except (OSError, ValueError):
        return "none"
    return f"free page reporting, order {order}" + (" (off: above the largest order)" if order > 10 else "")


def settle(data_dir: Path, quiet_cpu_s: float = 0.02, window: float = 0.5, timeout: float = 90,
           reporting_quiet: float = 2.5) -> float:
    """Wait until the previous case has stopped working the machine; return the seconds waited.

    A restore that bumps the revision leaves etcd compacting after it serves (seconds of CPU and
    writes on a 1 GB db), and every restore leaves dirty pages: a case started right away shares
    the disk and the cores with that, and the order of the cases decides who pays. So before each
    timed case: flush the page cache to disk, then wait until the member on ``data_dir`` used under
    ``quiet_cpu_s`` of CPU in ``window`` seconds.

    On a VM that reports free pages, memory the case before freed (its process, the moved-aside
    data dir's page cache) is handed back to the host about 2 s later: a case started within
    those seconds finds it still mapped and skips faults the other case pays (on this machine
    the order of two restores moved each by 1.5-3 s). So also wait until no memory was handed
    back for ``reporting_quiet`` seconds: every case then starts with the same, all-handed-back,
    free memory. (With reporting off, nothing is handed back and this returns at once.)"""
    started = time.monotonic()
    os.sync()
    flag = f"--data-dir={data_dir}".encode()
    tick = os.sysconf("SC_CLK_TCK")

    def member_cpu() -> float:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if flag not in (proc / "cmdline").read_bytes().split(b"\0"):
                    continue
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            return (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        return 0.0

    while time.monotonic() - started < timeout:
        before = member_cpu()
        time.sleep(window)
        if member_cpu() - before < quiet_cpu_s:
            break
    handed_back, quiet_since = memory_handed_back_kib(), time.monotonic()
    while handed_back is not None and time.monotonic() - started < timeout:
        time.sleep(0.25)
        now = memory_handed_back_kib()
        if now != handed_back:
            handed_back, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= reporting_quiet:
            break
    return time.monotonic() - started


def by_hand(store_url: str, key: str, node_etcd: LocalEtcd, pki: Pki, kubelet: DemoKubelet, work: Path) -> Run:
    """What an operator does without lifeboat, from a running member to a restored, started one."""
    release = etcd_35()
    assert release.etcdutl is not None
    run = Run(0.0)
    started = time.monotonic()
    kubelet.down()  # stop etcd (on a kubeadm node: move its manifest away and wait)
    node_etcd.data_dir.rename(node_etcd.data_dir.with_name("etcd.by-hand-moved"))
    stored = work / "snapshot.db.zst"
    aws = aws_cli()
    if aws is not None:  # what operators use: parallel ranged downloads, 10 at a time by default
        bucket, _, prefix = store_url.removeprefix("s3://").partition("/")
        run.add(rss.run([str(aws), "s3", "cp", "--quiet", "--endpoint-url", os.environ["AWS_ENDPOINT_URL"],
                         f"s3://{bucket}/{prefix}/{key}", str(stored)], capture=True))
    else:  # a plain single-stream download
        store = open_store(store_url)
        with stored.open("wb") as out:
            for chunk in store.get_stream(key):
                out.write(chunk)
    raw = work / "snapshot.db"
    run.add(rss.run([str(tool("zstd", "Debian zstd")), "-d", "-q", "-f", str(stored), "-o", str(raw)],
                    capture=True))
    run.add(rss.run([str(release.etcdutl), "snapshot", "restore", str(raw), "--data-dir", str(node_etcd.data_dir),
                     "--name", node_etcd.name, "--initial-cluster", node_etcd.initial_cluster,
                     "--initial-cluster-token", "by-hand", "--initial-advertise-peer-urls", node_etcd.peer_url],
                    capture=True))
    kubelet.up()
    wait_answers(node_etcd, pki)
    run.wall_s = time.monotonic() - started
    stored.unlink()
    raw.unlink()
    return run


def with_lifeboat(root: Path, repo: str, env: dict[str, str], *flags: str) -> Run:
    """Run the restore; print when each of its steps began (its own progress lines) to stderr."""
    lines: list[tuple[float, str]] = []
    cpu: list[float] = []
    # --force: the node's member is a demo cluster of its own, not the one the backup came from.
    measured = rss.run([*LIFEBOAT, "restore", "latest", "--root", str(root), "--repo", repo,
                        "--cluster", "bench", "--force", *flags], dict(env, PYTHONUNBUFFERED="1"), capture=True,
                       lines=lambda at, line: lines.append((at, line.decode(errors="replace").rstrip())),
                       cpu_at_lines=cpu)
    if measured.exit_code != 0:
        raise SystemExit("lifeboat restore failed:\n" + "\n".join(text for _, text in lines[-20:]))
    steps = [(at, used, text) for (at, text), used in zip(lines, cpu, strict=True) if text.startswith("[")]
    ends = [(at, used) for at, used, _ in steps[1:]] + [(measured.wall_s, measured.cpu_s)]
    for (at, used, text), (end, end_cpu) in zip(steps, ends, strict=True):
        print(f"  {at:6.2f}s +{end - at:5.2f}s CPU {end_cpu - used:5.2f}s {text[:100]}", file=sys.stderr)
    return Run(measured.wall_s, measured.cpu_s, measured.own_peak_bytes, measured.peak_bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-bumped", action="store_true",
                        help="skip the case with lifeboat's own revision bump")
    parser.add_argument("--with-tool", action="store_true",
                        help="also run the bumped case with --restore-with tool (etcdutl writes the data dir): "
                             "an A/B of lifeboat's own writer in the same run")
    parser.add_argument("--also", metavar="REV",
                        help="also run the lifeboat cases with the code of git revision REV, "
                        "alternating with HEAD's (an A/B of a change)")
    parser.add_argument("--work", type=work_dir, default=BENCH_WORK / "restore-run",
                        help="work dir, emptied first (default bench-work/restore-run)")
    args = parser.parse_args()
    on_termination()  # SIGTERM cleans up like Ctrl-C: SeaweedFS and the etcd members stop
    snapshot = make_snapshot(args.size_mib << 20, BENCH_WORK / f"kube-like-{args.size_mib}MiB.db", style="kube")
    work: Path = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with SeaweedServer(weed(), work / "seaweed") as seaweed:
        s3 = seaweed.s3()
        env = dict(frozen_source(), **s3.env())
        os.environ.update(s3.env())
        repo = f"s3://{s3.bucket}/bench"
        manifest = take_backup(snapshot, work, env, repo)
        key = f"clusters/bench/backups/{manifest['id']}/snapshot.db.zst"
        variants = {"": env}
        if args.also:
            variants[f" [{args.also}]"] = dict(env, PYTHONPATH=frozen_source(args.also)["PYTHONPATH"])
        results = run_rounds(work, repo, key, variants, args.rounds, not args.no_bumped, args.with_tool)
    report(results, snapshot, results_dir(work, BENCH_WORK / "restore-run"))


def run_rounds(work: Path, repo: str, key: str, variants: dict[str, dict[str, str]], rounds: int,
               bumped: bool = True, with_tool: bool = False) -> dict[str, list[Run]]:
    pki = make_pki(work / "pki")
    etcd = demo_member("bench", work / "node/var/lib/etcd", work / "etcd.log", pki)
    etcd.initial_cluster = f"bench={etcd.peer_url}"
    apiserver = ReservedPort()  # held while the fake kube-apiserver stops and starts with each restore
    apiserver_port = apiserver.port
    root = make_node(work / "node", pki, etcd, apiserver_port)
    kubelet = DemoKubelet(root, etcd, apiserver_port)
    results: dict[str, list[Run]] = {BY_HAND: []}
    try:
        kubelet.up()  # a running member to restore over, as on a real node
        wait_answers(etcd, pki)
        for round_ in range(rounds):
            settle(etcd.data_dir)
            results[BY_HAND].append(
                by_hand(repo, key, etcd, pki, kubelet, work))
            for suffix, env in variants.items():
                settle(etcd.data_dir)
                results.setdefault(NO_BUMP + suffix, []).append(
                    with_lifeboat(root, repo, env, "--bump-revision", "0"))
                if bumped:
                    settle(etcd.data_dir)
                    results.setdefault(BUMPED + suffix, []).append(with_lifeboat(root, repo, env))
                if with_tool:
                    settle(etcd.data_dir)
                    results.setdefault(BUMPED_TOOL + suffix, []).append(
                        with_lifeboat(root, repo, env, "--restore-with", "tool"))
            for moved in [*etcd.data_dir.parent.glob("etcd.lifeboat-moved-*"),
                          *etcd.data_dir.parent.glob("etcd.by-hand-moved")]:
                shutil.rmtree(moved)
            print(f"round {round_ + 1}: " + ", ".join(
                f"{k}: {v[-1].wall_s:.2f}s (CPU {v[-1].cpu_s:.2f}s, RSS {v[-1].own_peak_bytes / 1e6:.0f} MB, "
                f"tree {v[-1].tree_peak_bytes / 1e6:.0f} MB)"
                for k, v in results.items()) + f"; load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    finally:
        kubelet.down()
    return results


def report(results: dict[str, list[Run]], snapshot: Path, out_dir: Path) -> None:
    base = statistics.median(r.wall_s for r in next(iter(results.values())))
    rows = []
    for name, runs in results.items():
        median = statistics.median(r.wall_s for r in runs)
        rows.append({"case": name, "median_s": round(median, 3), "ratio": round(median / base, 3),
                     "runs_s": [round(r.wall_s, 3) for r in runs],
                     "cpu_s": round(statistics.median(r.cpu_s for r in runs), 2),
                     "peak_rss_mb": round(max(r.own_peak_bytes for r in runs) / 1e6, 1),
                     "tree_peak_rss_mb": round(max(r.tree_peak_bytes for r in runs) / 1e6, 1)})
    (out_dir / "bench_restore.json").write_text(json.dumps(
        {"snapshot": str(snapshot), "snapshot_bytes": snapshot.stat().st_size, "cpus": os.cpu_count(),
         "load_after": os.getloadavg(), "memory": memory_reporting(), "results": rows}, indent=2))
    print(f"db {snapshot.stat().st_size / 1e6:.0f} MB, {len(rows[0]['runs_s'])} rounds, "  # type: ignore[arg-type]
          f"load average {os.getloadavg()[0]:.1f}; freed memory: {memory_reporting()}\n")
    print("| case | median | runs | ratio to by hand | CPU (median) | peak RSS (max) | with etcdutl (max) |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        times = ", ".join(f"{t:.2f}" for t in r["runs_s"])  # type: ignore[attr-defined]
        print(f"| {r['case']} | {r['median_s']:.2f} s | {times} s | {r['ratio']:.2f}× | {r['cpu_s']:.1f} s | "
              f"{r['peak_rss_mb']:.0f} MB | {r['tree_peak_rss_mb']:.0f} MB |")


if __name__ == "__main__":
    main()

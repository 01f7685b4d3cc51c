"""`lifeboat restore` from SeaweedFS S3 side by side with the same restore done by hand.

One ~1 GB Kubernetes-like backup (``benchmarks/dataset.py``, style "kube") is taken once into
a real SeaweedFS S3. Then, alternating, on a kubeadm-like node run by the demo's stand-in for
the kubelet (etcd 3.5.1 over mTLS on loopback):

* by hand: stop etcd, move its data dir aside, download the stored object, ``zstd -d``,
  ``etcdutl snapshot restore`` into a new data dir, start etcd, wait until it answers;
* lifeboat: ``lifeboat restore latest --root NODE`` (which also verifies every checksum and the
  snapshot, moves the old data dir aside, checks the restored keyspace, bumps the revision by a
  billion — natively, as etcdutl 3.5.1 cannot — and waits for the member to serve the bumped
  revision and refuse older watches).

Both end with a started, healthy member. Results go to ``bench-work/bench_restore.json``.
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_backup import LIFEBOAT, frozen_source, serve  # noqa: E402
from benchmarks.dataset import BENCH_WORK, make_snapshot  # noqa: E402
from lifeboat.demo.kubelet import DemoKubelet  # noqa: E402
from lifeboat.demo.node import demo_member, make_node  # noqa: E402
from lifeboat.demo.pki import Pki, make_pki  # noqa: E402
from lifeboat.etcd.local import LocalEtcd, free_loopback_port  # noqa: E402
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
# The default: the revision raised by a billion, by lifeboat itself with etcdutl 3.5.1.
BUMPED = "lifeboat restore latest (revision bumped)"


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


def by_hand(store_url: str, key: str, node_etcd: LocalEtcd, pki: Pki, kubelet: DemoKubelet, work: Path) -> float:
    """What an operator does without lifeboat, from a running member to a restored, started one."""
    release = etcd_35()
    assert release.etcdutl is not None
    started = time.monotonic()
    kubelet.down()  # stop etcd (on a kubeadm node: move its manifest away and wait)
    node_etcd.data_dir.rename(node_etcd.data_dir.with_name("etcd.by-hand-moved"))
    stored = work / "snapshot.db.zst"
    aws = aws_cli()
    if aws is not None:  # what operators use: parallel ranged downloads, 10 at a time by default
        bucket, _, prefix = store_url.removeprefix("s3://").partition("/")
        subprocess.run([str(aws), "s3", "cp", "--quiet", "--endpoint-url", os.environ["AWS_ENDPOINT_URL"],
                        f"s3://{bucket}/{prefix}/{key}", str(stored)], check=True)
    else:  # a plain single-stream download
        store = open_store(store_url)
        with stored.open("wb") as out:
            for chunk in store.get_stream(key):
                out.write(chunk)
    raw = work / "snapshot.db"
    subprocess.run([str(tool("zstd", "Debian zstd")), "-d", "-q", "-f", str(stored), "-o", str(raw)], check=True)
    subprocess.run([str(release.etcdutl), "snapshot", "restore", str(raw), "--data-dir", str(node_etcd.data_dir),
                    "--name", node_etcd.name, "--initial-cluster", node_etcd.initial_cluster,
                    "--initial-cluster-token", "by-hand", "--initial-advertise-peer-urls", node_etcd.peer_url],
                   check=True, capture_output=True)
    kubelet.up()
    wait_answers(node_etcd, pki)
    elapsed = time.monotonic() - started
    stored.unlink()
    raw.unlink()
    return elapsed


def with_lifeboat(root: Path, repo: str, env: dict[str, str], *flags: str) -> float:
    """Run the restore; print when each of its steps began (its own progress lines) to stderr."""
    started = time.monotonic()
    # --force: the node's member is a demo cluster of its own, not the one the backup came from.
    proc = subprocess.Popen([*LIFEBOAT, "restore", "latest", "--root", str(root), "--repo", repo,
                             "--cluster", "bench", "--force", *flags], env=dict(env, PYTHONUNBUFFERED="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = [(time.monotonic() - started, line.rstrip()) for line in proc.stdout]
    if proc.wait() != 0:
        raise SystemExit("lifeboat restore failed:\n" + "\n".join(text for _, text in lines[-20:]))
    elapsed = time.monotonic() - started
    for at, text in lines:
        if text.startswith("["):
            print(f"  {at:6.2f}s {text[:110]}", file=sys.stderr)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-bumped", action="store_true",
                        help="skip the case with lifeboat's own revision bump")
    parser.add_argument("--also", metavar="REV",
                        help="also run the lifeboat cases with the code of git revision REV, "
                        "alternating with HEAD's (an A/B of a change)")
    args = parser.parse_args()
    snapshot = make_snapshot(args.size_mib << 20, BENCH_WORK / f"kube-like-{args.size_mib}MiB.db", style="kube")
    work = BENCH_WORK / "restore-run"
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
        results = run_rounds(work, repo, key, variants, args.rounds, not args.no_bumped)
    report(results, snapshot)


def run_rounds(work: Path, repo: str, key: str, variants: dict[str, dict[str, str]], rounds: int,
               bumped: bool = True) -> dict[str, list[float]]:
    pki = make_pki(work / "pki")
    etcd = demo_member("bench", work / "node/var/lib/etcd", work / "etcd.log", pki)
    etcd.initial_cluster = f"bench={etcd.peer_url}"
    apiserver_port = free_loopback_port()
    root = make_node(work / "node", pki, etcd, apiserver_port)
    kubelet = DemoKubelet(root, etcd, apiserver_port)
    results: dict[str, list[float]] = {BY_HAND: []}
    try:
        kubelet.up()  # a running member to restore over, as on a real node
        wait_answers(etcd, pki)
        for round_ in range(rounds):
            results[BY_HAND].append(
                by_hand(repo, key, etcd, pki, kubelet, work))
            for suffix, env in variants.items():
                results.setdefault(NO_BUMP + suffix, []).append(
                    with_lifeboat(root, repo, env, "--bump-revision", "0"))
                if bumped:
                    results.setdefault(BUMPED + suffix, []).append(with_lifeboat(root, repo, env))
            for moved in [*etcd.data_dir.parent.glob("etcd.lifeboat-moved-*"),
                          *etcd.data_dir.parent.glob("etcd.by-hand-moved")]:
                shutil.rmtree(moved)
            print(f"round {round_ + 1}: " + ", ".join(f"{k}: {v[-1]:.2f}s" for k, v in results.items()),
                  file=sys.stderr)
    finally:
        kubelet.down()
    return results


def report(results: dict[str, list[float]], snapshot: Path) -> None:
    base = statistics.median(next(iter(results.values())))
    rows = [{"case": name, "median_s": round(statistics.median(runs), 3),
             "ratio": round(statistics.median(runs) / base, 3), "runs_s": [round(r, 3) for r in runs]}
            for name, runs in results.items()]
    (BENCH_WORK / "bench_restore.json").write_text(json.dumps(
        {"snapshot": str(snapshot), "snapshot_bytes": snapshot.stat().st_size, "results": rows}, indent=2))
    print(f"db {snapshot.stat().st_size / 1e6:.0f} MB, {len(rows[0]['runs_s'])} rounds, "  # type: ignore[arg-type]
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| case | median | runs | ratio to by hand |\n| --- | --- | --- | --- |")
    for r in rows:
        runs = ", ".join(f"{t:.2f}" for t in r["runs_s"])  # type: ignore[attr-defined]
        print(f"| {r['case']} | {r['median_s']:.2f} s | {runs} s | {r['ratio']:.2f}× |")


if __name__ == "__main__":
    main()

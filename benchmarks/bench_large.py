"""An 8 GiB etcd db end to end: backup (local, S3), verify, verify --drill, restore (issue #11).

etcd's suggested maximum backend is 8 GiB. The db (``dataset.py --shape large``, generated once
and cached in ``bench-work/``; it needs ~20 GB of disk while it runs) is served by etcd 3.5.1
over mTLS on loopback. Each command runs once as a fresh process; its wall time and peak RSS
(its own high-water mark, and the sum over its process tree sampled every 0.05 s, which adds
the etcdutl and the drill's etcd it starts: ``benchmarks/rss.py``) are printed as Markdown rows
with the load average before and after.
The target is peak RSS ≤ 150 MB for each. The drill and the restore each need about three times
the db free in the work dir (``--work``, default ``bench-work/large-run``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import rss  # noqa: E402
from benchmarks.bench_backup import LIFEBOAT, frozen_source  # noqa: E402
from benchmarks.dataset import BENCH_WORK, shaped_snapshot, work_dir  # noqa: E402
from tests.support.binaries import etcd_35, weed  # noqa: E402
from tests.support.etcd import EtcdMember  # noqa: E402
from tests.support.pki import make_pki  # noqa: E402
from tests.support.seaweed import SeaweedServer  # noqa: E402
from benchmarks.teardown import on_termination  # noqa: E402

STEPS = ("backup", "s3", "verify", "drill", "restore")


def measured(name: str, argv: list[str], env: dict[str, str]) -> None:
    """Run ``argv``; print a Markdown row (wall time, peak RSS, load) and the output's ends."""
    load_before = os.getloadavg()[0]
    run = rss.run(argv, env, capture=True)
    lines = run.output.decode(errors="replace").strip().splitlines()
    print(f"| {name} | {run.wall_s:.0f} s | {run.own_peak_bytes / 1e6:.0f} MB | {run.tree_peak_bytes / 1e6:.0f} MB "
          f"| {load_before:.1f} → {os.getloadavg()[0]:.1f} | exit {run.exit_code} |", flush=True)
    print("\n".join("    " + line for line in lines[:3] + ["..."] + lines[-4:]), file=sys.stderr, flush=True)


def serve(snapshot: Path, work: Path) -> EtcdMember:
    release = etcd_35()
    member = EtcdMember(release, "bench", work, make_pki(work / "pki"), quota_bytes=10 << 30)
    assert release.etcdutl is not None
    subprocess.run([str(release.etcdutl), "snapshot", "restore", str(snapshot), "--data-dir",
                    str(member.data_dir), "--name", "bench", "--initial-cluster", f"bench={member.peer_url}",
                    "--initial-advertise-peer-urls", member.peer_url], check=True, capture_output=True)
    member.start(f"bench={member.peer_url}", "bench", state="new")
    try:
        member.wait_healthy(1200)  # etcd rebuilds its index of ~1M revisions first
    except BaseException:  # Ctrl-C while it starts: stop it all the same
        member.stop()
        raise
    return member


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=8192)
    parser.add_argument("--work", type=work_dir, default=BENCH_WORK / "large-run",
                        help="work dir (repository, restored member, scratch; default bench-work/large-run)")
    parser.add_argument("steps", nargs="*", metavar="STEP", default=list(STEPS),
                        help=f"some of {', '.join(STEPS)} (default all; verify, drill and restore use the "
                        "last local backup)")
    args = parser.parse_args()
    if unknown := set(args.steps) - set(STEPS):
        parser.error(f"unknown steps {', '.join(sorted(unknown))}")
    snapshot = shaped_snapshot("large", args.size_mib)
    work: Path = args.work
    repo = work / "repo"
    if "backup" in args.steps:
        shutil.rmtree(work, ignore_errors=True)
    for scratch in ("tmp", "restored"):
        shutil.rmtree(work / scratch, ignore_errors=True)
        (work / scratch).mkdir(parents=True)
    release = etcd_35()
    env = dict(frozen_source(), ETCDCTL_API="3")
    print(f"db {snapshot.stat().st_size:,} bytes\n\n| command | wall | peak RSS (lifeboat) | peak RSS (process tree) | load | result |\n| --- | --- | --- | --- | --- | --- |")
    member = serve(snapshot, work) if {"backup", "s3"} & set(args.steps) else None
    try:
        if member is not None:
            conn = [f"--endpoints={member.client_url}", *member.tls_flags()]
            backup = [*LIFEBOAT, "backup", *conn, "--no-files", "--tmp-dir", str(work / "tmp")]
            if "backup" in args.steps:
                measured("lifeboat backup, local, zstd", [*backup, "--repo", str(repo)], env)
            if "s3" in args.steps:
                with SeaweedServer(weed(), work / "seaweed") as seaweed:
                    measured("lifeboat backup to SeaweedFS S3, zstd",
                             [*backup, "--repo", f"s3://{seaweed.s3().bucket}/large"], dict(env, **seaweed.s3().env()))
                shutil.rmtree(work / "seaweed", ignore_errors=True)
    finally:
        if member is not None:
            member.stop()
            shutil.rmtree(member.data_dir, ignore_errors=True)
    local = ["--repo", str(repo), "--tmp-dir", str(work / "tmp")]
    if "verify" in args.steps:
        measured("lifeboat verify latest", [*LIFEBOAT, "verify", "latest", *local], env)
    if "drill" in args.steps:
        measured("lifeboat verify latest --drill",
                 [*LIFEBOAT, "verify", "latest", "--drill", *local, "--restore-tool", str(release.etcdutl),
                  "--restore-with", "lifeboat"], env)
    if "restore" in args.steps:
        measured("lifeboat restore latest --no-start (--supervisor none)", [
            *LIFEBOAT, "restore", "latest", "--repo", str(repo), "--supervisor", "none", "--name", "m0",
            "--initial-cluster", "m0=http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--data-dir", str(work / "restored" / "m0.etcd"), "--restore-tool", str(release.etcdutl),
            "--restore-with", "lifeboat",
            "--endpoints", "http://127.0.0.1:9", "--no-start"], env)
        shutil.rmtree(work / "restored", ignore_errors=True)


if __name__ == "__main__":
    on_termination()  # SIGTERM cleans up like Ctrl-C
    main()

"""Differential test of point-in-time restore: a seeded random workload, etcd's own Range at every
revision (read before any compaction) against what lifeboat builds at that revision, by each path.

The seed is ``LIFEBOAT_FUZZ_SEED`` (fixed by default); /work/bench-work/s29/hi/ runs it longer.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from lifeboat.catalog.repository import BackupRepository
from lifeboat.etcd import EtcdClient
from lifeboat.pitr import PointTarget, build_point_snapshot, find_point
from lifeboat.snapshot import iter_latest
from lifeboat.store import open_store
from tests.support.binaries import weed
from tests.support.capture_workload import capture_options, capture_started, open_repository, wait_for
from tests.support.cli import Cli
from tests.support.etcd import EtcdMember
from tests.support.point_fuzz import CaptureProcess, Row, Workload, differences, fuzz_kills, fuzz_seed, fuzz_steps
from tests.support.seaweed import SeaweedServer

pytestmark = pytest.mark.integration


def rows_of(path: Path) -> list[Row]:
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) for kv in iter_latest(path)]


def restart(etcd: EtcdMember) -> None:
    etcd.stop()
    etcd.start(f"{etcd.name}={etcd.peer_url}", "lifeboat-test")
    etcd.wait_healthy(60)


def every_revision_exact(repo: BackupRepository, w: Workload, tmp_path: Path, seed: str) -> None:
    """Each revision ``w`` recorded, built from the repository, is etcd's state at it."""
    for revision in sorted(w.states):
        point = find_point(repo, "prod", PointTarget(revision=revision), None)
        built = build_point_snapshot(repo, point, None, tmp_path / f"at-{revision}.db")
        got = rows_of(built.path)
        assert got == w.states[revision], f"revision {revision}: {differences(w.states[revision], got)}; {seed}"
        built.path.unlink()


def run_workload(etcd: EtcdMember, client: EtcdClient, w: Workload, cli: Cli, repo_dir: Path, steps: int,
                 caught_up: Callable[[], None]) -> None:
    """``steps`` random operations in three phases: a backup taken by hand after the first (a
    later base), a compaction and a defrag after the second, etcd restarted before the third;
    short leases left to expire; a physical compaction at the end. Each compaction waits until
    capture has read every revision (``caught_up``): one that outruns it is a gap (tested in
    test_capture.py), not a point to compare."""
    for phase in range(3):
        for _ in range(steps // 3):
            w.step()
        if phase == 0:
            cli.json("backup", "--endpoints", etcd.client_url, "--repo", str(repo_dir), "--cluster", "prod",
                     "--no-files")
        elif phase == 1:
            w.record()
            caught_up()
            w.compact(physical=False)
            client.defragment(etcd.client_url)
            restart(etcd)
    w.settle(2.5)  # leases of 1-2 s end: etcd deletes their keys
    w.step()
    w.record()
    caught_up()
    w.compact(physical=True)


def test_every_revision_of_a_seeded_random_workload_restores_exactly_as_etcds_range(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, cli: Cli) -> None:
    repo_dir = tmp_path / "repo"
    repo = open_repository(repo_dir)
    client.put(b"/before/base", b"in the base")
    w = Workload(client, fuzz_seed())
    options = capture_options("prod", etcd.client_url, tmp_path / "spool", flush_interval=0.2,
                              segment_max_bytes=1 << 20)
    with capture_started(client, repo, options) as status:
        w.start()
        run_workload(etcd, client, w, cli, repo_dir, steps=fuzz_steps(),
                     caught_up=lambda: wait_for(lambda: status.last_revision >= w.recorded_to, timeout=60))
        wait_for(lambda: status.last_revision >= w.recorded_to, timeout=60)
    seed = f"seed {w.seed}, ops {w.ops}"
    every_revision_exact(repo, w, tmp_path, seed)
    # Each time a call returned at maps to a revision at most the one etcd was at then, and at
    # least the one it was at 2 s before (capture sees a revision within a pass of its commit).
    for moment, at in w.returned[::7]:
        point = find_point(repo, "prod", PointTarget(moment=moment), None)
        before = max((r for t, r in w.returned if t <= moment - timedelta(seconds=2)), default=w.first)
        assert before <= point.revision <= at, f"{moment}: revision {point.revision}, etcd was at {at}; {seed}"
    # --to-time through the command: the snapshot of the revision that time maps to.
    moment = w.returned[len(w.returned) // 2][0]
    mapped = find_point(repo, "prod", PointTarget(moment=moment), None).revision
    saved = tmp_path / "at-time.db"
    code, _out, err = cli("verify", "--to-time", moment.isoformat(), "--save-snapshot", str(saved),
                          "--repo", str(repo_dir))
    assert code == 0, err
    assert rows_of(saved) == w.states[mapped], f"verify --to-time {moment.isoformat()} (revision {mapped}); {seed}"
    # The commands: verify's saved snapshot, and a restore plan, at a few revisions.
    for revision in sorted(w.states)[1::len(w.states) // 3]:
        saved = tmp_path / f"saved-{revision}.db"
        code, _out, err = cli("verify", "--to-revision", str(revision), "--save-snapshot", str(saved),
                              "--repo", str(repo_dir))
        assert code == 0, err
        assert rows_of(saved) == w.states[revision], f"verify --save-snapshot at {revision}; {seed}"
        plan = cli.json("restore", "plan", "--to-revision", str(revision), "--repo", str(repo_dir),
                        "--initial-cluster", f"m0={etcd.peer_url}", "--no-start")
        [member] = plan["members"]
        data_dir = tmp_path / f"restored-{revision}"
        code, _out, err = cli(*member["argv"][1:], f"--data-dir={data_dir}", "--supervisor=none",
                              "--endpoints=http://127.0.0.1:1", "--wait-timeout=5", "--bump-revision=0")
        assert code == 0, err
        assert rows_of(data_dir / "member" / "snap" / "db") == w.states[revision], f"restore at {revision}; {seed}"


def captured_to(repo: BackupRepository) -> int:
    listings = repo.chain_store.chains("prod")
    return max((ref.last_revision for listing in listings for ref in listing.segments), default=0)


def one_whole_chain_exact_everywhere(repo: BackupRepository, w: Workload, tmp_path: Path, seed: str) -> None:
    """One chain, no gap, each segment starting right after the one before; every revision exact."""
    [listing] = repo.chain_store.chains("prod")
    assert listing.gap is None, seed
    ranges = [(ref.first_revision, ref.last_revision) for ref in listing.segments]
    assert all(later[0] == earlier[1] + 1 for earlier, later in zip(ranges, ranges[1:])), f"{ranges}; {seed}"
    every_revision_exact(repo, w, tmp_path, seed)


def test_capture_killed_or_stopped_at_random_points_leaves_one_chain_without_gap_or_duplicate_exact_everywhere(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path) -> None:
    """SIGKILL and SIGTERM at random moments of a workload with 1 MiB values (mid-segment, mid-upload)."""
    repo_dir = tmp_path / "repo"
    repo = open_repository(repo_dir)
    client.put(b"/before/base", b"in the base")
    w = Workload(client, fuzz_seed(), big_values=4)
    capture = CaptureProcess(etcd.client_url, str(repo_dir), str(tmp_path))
    try:
        capture.start()
        wait_for(lambda: bool(repo.chain_store.chains("prod")), timeout=60)
        w.start()
        for _ in range(fuzz_kills()):
            for _ in range(w.rng.randint(2, 10)):
                w.step()
            time.sleep(w.rng.random() * 0.5)
            capture.stop(w.rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGTERM]))
            w.step()  # written while no capture runs
            capture.start()
        w.settle(2.5)
        w.step()
        w.record()
        wait_for(lambda: captured_to(repo) >= w.recorded_to, timeout=60)
    finally:
        capture.close()
    one_whole_chain_exact_everywhere(repo, w, tmp_path, f"seed {w.seed}, ops {w.ops}, stops {capture.ended}")


def spooled(spool: Path) -> list[str]:
    return [p.name for p in spool.glob("prod/*") if not p.name.startswith(".") and not p.name.endswith(".part")]


@pytest.mark.parametrize("release", ["3.5"], indirect=True)
def test_capture_killed_while_segments_wait_in_its_spool_uploads_them_after_restart_and_every_revision_is_exact(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path) -> None:
    """The object store stops; capture spools; it is SIGKILLed with segments in the spool; the
    store comes back and capture is started again: the spool is uploaded in order, no gap."""
    with SeaweedServer(weed(), tmp_path / "seaweed") as seaweed:
        s3 = seaweed.s3()
        url = f"s3://{s3.bucket}/spooled"
        repo = BackupRepository.open(open_store(url, s3.env()), create=True)
        client.put(b"/before/base", b"in the base")
        w = Workload(client, fuzz_seed(), big_values=1)
        capture = CaptureProcess(etcd.client_url, url, str(tmp_path), env=s3.env())
        try:
            capture.start()
            wait_for(lambda: bool(repo.chain_store.chains("prod")), timeout=60)
            w.start()
            for _ in range(10):
                w.step()
            seaweed.stop()
            for _ in range(30):
                w.step()
                time.sleep(0.1)
            wait_for(lambda: bool(spooled(tmp_path / "spool")), timeout=60)
            capture.stop(signal.SIGKILL)
            in_spool = spooled(tmp_path / "spool")
            w.step()
            seaweed.start()
            capture.start()
            for _ in range(10):
                w.step()
            w.record()
            wait_for(lambda: captured_to(repo) >= w.recorded_to, timeout=90)
        finally:
            capture.close()
        assert spooled(tmp_path / "spool") == []
        one_whole_chain_exact_everywhere(repo, w, tmp_path, f"seed {w.seed}, ops {w.ops}, spooled {in_spool}")

"""Interrupted backups leak nothing: SIGTERM cleans up at once, SIGKILL's leftovers are swept later."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lifeboat.catalog.repository import BackupRepository
from lifeboat.retention import KeepLast
from lifeboat.retention.prune import apply_prune, plan_prune
from lifeboat.snapshot.spool import spool_dir
from lifeboat.store import open_store
from tests.faults.conftest import lifeboat_process
from tests.support.cli import Cli
from tests.support.etcd import EtcdMember
from tests.support.seaweed import S3Endpoint

pytestmark = pytest.mark.integration


def spooling(tmp: Path, process: subprocess.Popen[bytes], at_least: int = 1 << 20,
             timeout: float = 60) -> Path:
    """Wait until ``process`` has spooled ``at_least`` bytes of etcd's snapshot in ``tmp``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1].decode()
        for spool in tmp.glob("lifeboat-*/snapshot.db"):
            try:
                if spool.stat().st_size >= at_least:
                    return spool.parent
            except FileNotFoundError:
                pass
        time.sleep(0.002)
    raise TimeoutError("the backup never started spooling")


@pytest.fixture
def paused_mid_stream(busy_etcd: EtcdMember) -> Iterator[EtcdMember]:
    """etcd, to be paused (SIGSTOP) mid-snapshot by the test; always resumed afterwards."""
    try:
        yield busy_etcd
    finally:
        busy_etcd.resume()


def interrupt(process: subprocess.Popen[bytes], etcd: EtcdMember, sig: int,
              within: float | None = None) -> tuple[int, str]:
    """Pause etcd (the backup is now stuck mid-stream), signal lifeboat, resume etcd.

    With ``within``, lifeboat must have exited that many seconds after the signal, etcd still paused.
    """
    etcd.pause()
    try:
        signalled = time.monotonic()
        process.send_signal(sig)
        # Keep etcd paused until lifeboat has acted on the signal: on a loaded machine a fixed
        # 0.3 s could end first, and the resumed stream could then finish the backup.
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass  # it may need etcd to wind down; communicate() below waits for it
        waited = time.monotonic() - signalled
        assert within is None or waited < within, f"exited {waited:.1f} s after the signal"
    finally:
        etcd.resume()
    _out, err = process.communicate(timeout=60)
    return process.returncode, err.decode()


def start_backup(etcd: EtcdMember, repo: str | Path, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """``lifeboat backup`` of ``etcd`` into ``repo`` with its own empty --tmp-dir."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(parents=True)
    return lifeboat_process(["backup", f"--endpoints={etcd.client_url}", "--repo", str(repo), "--no-files",
                             "--tmp-dir", str(tmp)]), tmp


def manifests_and_objects(repo: Path) -> list[str]:
    return sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*")
                  if p.is_file() and p.name != "lifeboat-repository.json")


def test_sigterm_mid_backup_removes_spool_and_uploaded_objects_and_commits_nothing(
    paused_mid_stream: EtcdMember, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    backup, tmp = start_backup(paused_mid_stream, repo, tmp_path)
    spool = spooling(tmp, backup)
    assert (spool.stat().st_mode & 0o777) == 0o700

    # Not after gRPC's keepalive gives up on the stalled stream (10 s of pings, then 10 s more):
    # the abandoned stream is cancelled at once (it used to take 10 s).
    code, err = interrupt(backup, paused_mid_stream, signal.SIGTERM, within=8)

    assert code == 143, err
    assert err.count("\n") == 1 and "terminated" in err and "Traceback" not in err
    assert list(tmp.iterdir()) == []
    assert manifests_and_objects(repo) == []  # no manifest, no data object, no hidden temp file


def new_multipart_upload(seaweed: S3Endpoint, before: set[str], backup: subprocess.Popen[bytes]) -> str:
    """Wait until ``backup`` has begun a multipart upload (one not in ``before``); its upload id."""
    # zstd's worker threads hold a few MiB back until more input comes, so the upload begins
    # well after the spool: wait for the multipart upload itself.
    deadline = time.monotonic() + 60
    while not (started := set(seaweed.pending_multipart_uploads()) - before):
        assert backup.poll() is None and time.monotonic() < deadline, "no multipart upload began"
        time.sleep(0.01)
    [upload_id] = started
    return upload_id


def test_sigterm_mid_s3_backup_aborts_its_multipart_upload(
    paused_mid_stream: EtcdMember, tmp_path: Path, s3_repo: str, seaweed: S3Endpoint, cli: Cli
) -> None:
    pending_before = set(seaweed.pending_multipart_uploads())
    backup, tmp = start_backup(paused_mid_stream, s3_repo, tmp_path)
    new_multipart_upload(seaweed, pending_before, backup)

    code, err = interrupt(backup, paused_mid_stream, signal.SIGTERM, within=8)

    assert code == 143, err
    assert set(seaweed.pending_multipart_uploads()) == pending_before
    assert list(tmp.iterdir()) == []
    assert cli.json("list", "--repo", s3_repo) == []


def test_spool_of_a_sigkilled_backup_is_removed_by_the_next_run_but_a_live_one_is_kept(
    paused_mid_stream: EtcdMember, tmp_path: Path, cli: Cli
) -> None:
    repo = tmp_path / "repo"
    killed, tmp = start_backup(paused_mid_stream, repo, tmp_path)
    left = spooling(tmp, killed)
    code, _err = interrupt(killed, paused_mid_stream, signal.SIGKILL)
    assert code == -signal.SIGKILL and left.is_dir()

    with spool_dir("verify", tmp) as live:  # another run, still working
        cli.json("backup", f"--endpoints={paused_mid_stream.client_url}", "--repo", str(repo), "--no-files",
                 "--tmp-dir", str(tmp))
        assert not left.exists()
        assert live.is_dir() and list(tmp.iterdir()) == [live]


def test_prune_removes_the_hidden_temp_object_of_a_sigkilled_backup_once_stale(
    paused_mid_stream: EtcdMember, tmp_path: Path, cli: Cli
) -> None:
    repo = tmp_path / "repo"
    killed, tmp = start_backup(paused_mid_stream, repo, tmp_path)
    spooling(tmp, killed, at_least=4 << 20)
    interrupt(killed, paused_mid_stream, signal.SIGKILL)
    temps = [p for p in repo.rglob(".lifeboat-tmp-*") if p.is_file()]
    assert len(temps) == 1
    fresh = repo / "clusters/default/backups/20240101T000000Z-abcdef/.lifeboat-tmp-live"
    fresh.parent.mkdir(parents=True)
    fresh.write_bytes(b"an upload still being written")
    two_days_ago = time.time() - 2 * 86400
    os.utime(temps[0], (two_days_ago, two_days_ago))

    report = cli.json("prune", "--repo", str(repo), "--keep-last", "1")

    assert not temps[0].exists() and fresh.exists()
    assert [t["key"] for t in report["temp_objects"] if t["verdict"] == "delete"] == [
        temps[0].relative_to(repo).as_posix()]


def test_prune_aborts_the_multipart_upload_of_a_sigkilled_s3_backup_once_stale_but_no_live_or_foreign_one(
    paused_mid_stream: EtcdMember, tmp_path: Path, s3_repo: str, seaweed: S3Endpoint, cli: Cli
) -> None:
    prefix = s3_repo.removeprefix(f"s3://{seaweed.bucket}/")
    # Another tool's uploads in the same bucket: a prefix that merely starts like ours, and the root.
    foreign = {seaweed.start_multipart_upload(f"{prefix}-old/clusters/c/backups/x/snapshot.db.zst", b"f" * 1024),
               seaweed.start_multipart_upload("clusters/c/backups/x/snapshot.db.zst")}
    before = set(seaweed.pending_multipart_uploads())
    killed, _tmp = start_backup(paused_mid_stream, s3_repo, tmp_path / "killed")
    stale = new_multipart_upload(seaweed, before, killed)
    code, _err = interrupt(killed, paused_mid_stream, signal.SIGKILL)
    killed_at = time.time()
    assert code == -signal.SIGKILL and stale in seaweed.pending_multipart_uploads()

    # S3 stamps times in whole seconds: start the live backup well after the kill, so that
    # a moment exists when the killed upload is past the grace and the live one is not.
    time.sleep(3)
    live, _tmp = start_backup(paused_mid_stream, s3_repo, tmp_path / "live")
    fresh = new_multipart_upload(seaweed, before | {stale}, live)
    paused_mid_stream.pause()  # the live backup now waits mid-stream, its upload open
    try:
        report = cli.json("prune", "--repo", s3_repo, "--keep-last", "1")
        listed = {t["upload_id"]: t for t in report["temp_objects"]}
        assert set(listed) == {stale, fresh}  # never another tool's uploads
        assert all(t["kind"] == "multipart upload" and t["verdict"] == "keep" and t["key"].startswith("clusters/")
                   for t in listed.values())
        assert report["temp_objects_listed"] is True and report["multipart_uploads_aborted"] == 0
        code, out, _ = cli("prune", "--repo", s3_repo, "--keep-last", "1", "--dry-run")
        rows = [line for line in out.splitlines() if "multipart upload" in line]
        assert code == 0 and len(rows) == 2 and all(row.startswith("KEEP") and "may still be running" in row
                                                    for row in rows)

        # An hour (the shortest grace) after the kill, by S3's own stamps on the uploads.
        repo = BackupRepository.open(open_store(s3_repo))
        moment = datetime.fromtimestamp(killed_at, timezone.utc) + timedelta(hours=1, seconds=0.5)
        plan = plan_prune(repo, [KeepLast(1)], moment, orphan_grace=timedelta(hours=1))
        assert {(i.upload.upload_id, i.remove) for i in plan.incomplete} == {(stale, True), (fresh, False)}
        result = apply_prune(repo, plan)
        assert result.uploads_aborted == 1
        pending = set(seaweed.pending_multipart_uploads())
        assert stale not in pending and fresh in pending and foreign <= pending
    finally:
        paused_mid_stream.resume()
    _out, err = live.communicate(timeout=120)
    assert live.returncode == 0, err.decode()  # its upload was left alone: the backup commits
    assert len(cli.json("list", "--repo", s3_repo)) == 1
    assert set(seaweed.pending_multipart_uploads()) == foreign

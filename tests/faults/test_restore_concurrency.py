"""Two restores of one data dir never run at once; a killed restore leaves no lock behind."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lifeboat.restore.journal import journal_path
from tests.faults.conftest import BusyBackup, lifeboat_process
from tests.support.binaries import EtcdRelease
from tests.support.cli import Cli
from tests.support.etcd import EtcdMember

pytestmark = pytest.mark.integration


def restore_args(backup_id: str, repo: Path, member: EtcdMember) -> list[str]:
    """Restore ``member``'s data dir with --supervisor none: the run waits for us to start etcd."""
    return ["restore", backup_id, "--repo", str(repo), "--supervisor", "none",
            f"--data-dir={member.data_dir}", f"--name={member.name}",
            f"--initial-cluster={member.name}={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}", f"--endpoints={member.client_url}",
            "--wait-timeout=60"]


def wait_until_in_place(member: EtcdMember, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Wait until the restore journaled its data dir as in place (it then waits for etcd)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1].decode()
        try:
            if "put-in-place" in json.loads(journal_path(member.data_dir).read_text())["done"]:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise TimeoutError("the restore never put its data dir in place")


@pytest.fixture
def backup(busy_backup: Callable[[Path, bool], BusyBackup], tmp_path: Path) -> tuple[str, Path]:
    made = busy_backup(tmp_path / "repo", False)
    return made.id, made.repo


def test_second_restore_started_at_the_same_time_is_refused_naming_the_holder(
    backup: tuple[str, Path], release35: EtcdRelease, tmp_path: Path, cli: Cli
) -> None:
    backup_id, repo = backup
    member = EtcdMember(release35, "m0", tmp_path / "node")
    member.workdir.mkdir()
    runs = [lifeboat_process(restore_args(backup_id, repo, member)) for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while all(r.poll() is None for r in runs) and time.monotonic() < deadline:
            time.sleep(0.05)
        loser = next(r for r in runs if r.poll() is not None)
        winner = next(r for r in runs if r is not loser)
        _out, err = loser.communicate()
        assert loser.returncode == 1, err.decode()
        assert f"pid {winner.pid}" in err.decode() and err.decode().count("\n") == 1

        wait_until_in_place(member, winner)
        code, _out, rollback_err = cli("restore", "--rollback", "--supervisor", "none",
                                       f"--data-dir={member.data_dir}", f"--name={member.name}",
                                       f"--initial-cluster={member.name}={member.peer_url}",
                                       f"--initial-advertise-peer-urls={member.peer_url}",
                                       f"--endpoints={member.client_url}")
        assert code == 1 and f"pid {winner.pid}" in rollback_err

        member.start(f"{member.name}={member.peer_url}", "ignored-data-exists")
        _out, err = winner.communicate(timeout=90)
        assert winner.returncode == 0, err.decode()
    finally:
        for r in runs:
            if r.poll() is None:
                r.kill()
                r.wait()
        member.stop()


def test_restore_killed_with_sigkill_leaves_no_lock_and_the_rerun_resumes(
    backup: tuple[str, Path], release35: EtcdRelease, tmp_path: Path
) -> None:
    backup_id, repo = backup
    member = EtcdMember(release35, "m0", tmp_path / "node")
    member.workdir.mkdir()
    first = lifeboat_process(restore_args(backup_id, repo, member))
    try:
        wait_until_in_place(member, first)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

        rerun = lifeboat_process(restore_args(backup_id, repo, member))
        wait_until_in_place(member, rerun)  # resumed: the journal still says so, nothing redone
        member.start(f"{member.name}={member.peer_url}", "ignored-data-exists")
        out, err = rerun.communicate(timeout=90)
        assert rerun.returncode == 0, err.decode()
        assert "(done)" in out.decode()  # the plan shows the steps the killed run had finished
    finally:
        for p in (first, locals().get("rerun")):
            if isinstance(p, subprocess.Popen) and p.poll() is None:
                p.kill()
                p.wait()
        member.stop()

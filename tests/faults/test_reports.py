"""What lifeboat reports stays true under faults: a closed pipe, objects gone, a delete mid-verify."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.repository import BackupRepository
from lifeboat.store import open_store
from lifeboat.verify.backup import VerifyReport, verify_backup
from tests.faults.conftest import BusyBackup, lifeboat_process
from tests.support.cli import Cli
from tests.support.etcd import EtcdMember

pytestmark = pytest.mark.integration


@pytest.fixture
def repo_with_backup(busy_backup: Callable[[Path, bool], BusyBackup], tmp_path: Path) -> tuple[Path, dict[str, object]]:
    backup = busy_backup(tmp_path / "repo", False)
    manifest = backup.manifest
    assert [room["what"] for room in manifest.pop("disk")] == ["the backup's spooled snapshot (member m0's db)"]
    return backup.repo, manifest  # as stored


@pytest.mark.parametrize("command", ["backup", "list"])
def test_output_into_a_closed_pipe_is_not_an_error_and_the_backup_stays_committed(
    cli: Cli, busy_etcd: EtcdMember, tmp_path: Path, command: str
) -> None:
    repo = tmp_path / "repo"
    cli.json("backup", f"--endpoints={busy_etcd.client_url}", "--repo", str(repo), "--no-files")
    args = ["backup", f"--endpoints={busy_etcd.client_url}", "--no-files"] if command == "backup" else ["list"]
    process = lifeboat_process([*args, "--repo", str(repo)])
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # `| head -1` that already exited: every write gets EPIPE
    err = process.stderr.read().decode()
    process.wait(timeout=120)

    assert process.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "unexpected" not in err
    assert len(cli.json("list", "--repo", str(repo))) == (2 if command == "backup" else 1)


def test_show_and_list_check_tell_that_an_object_is_gone(
    cli: Cli, repo_with_backup: tuple[Path, dict[str, object]]
) -> None:
    repo, manifest = repo_with_backup
    backup_id = str(manifest["id"])
    stored = repo / "clusters/default/backups" / backup_id / "snapshot.db.zst"
    stored.unlink()

    code, out, err = cli("show", backup_id, "--repo", str(repo), "-o", "json")
    assert code == 1 and "snapshot.db.zst is missing" in err and err.count("\n") == 1
    assert json.loads(out)["missing_objects"] == ["snapshot.db.zst is missing"]
    code, out, err = cli("list", "--repo", str(repo), "--check", "-o", "json")
    assert code == 1 and backup_id in err
    assert json.loads(out)[0]["check"] == ["snapshot.db.zst is missing"]
    assert cli("list", "--repo", str(repo))[0] == 0  # without --check: no store request per object


def test_show_and_list_check_accept_an_intact_backup(
    cli: Cli, repo_with_backup: tuple[Path, dict[str, object]]
) -> None:
    repo, manifest = repo_with_backup
    assert cli.json("show", str(manifest["id"]), "--repo", str(repo)) == manifest
    assert cli.json("list", "--repo", str(repo), "--check")[0]["check"] == "ok"


@pytest.fixture
def stored_backup(repo_with_backup: tuple[Path, dict[str, object]]) -> tuple[BackupRepository, Manifest]:
    """The repository of ``repo_with_backup`` opened in this process, and its backup's manifest."""
    path, manifest = repo_with_backup
    repo = BackupRepository.open(open_store(str(path)))
    return repo, repo.find(str(manifest["id"]))


def assert_fails_as_deleted(report: VerifyReport) -> None:
    failure = report.first_failure()
    assert failure is not None and failure.name == "backup still in the repository"
    assert "deleted" in failure.detail


def test_verify_of_a_backup_deleted_while_it_runs_fails(stored_backup: tuple[BackupRepository, Manifest]) -> None:
    repo, backup = stored_backup
    deleted: list[bool] = []

    def delete_once(stage: str, done: int) -> None:
        if not deleted:  # the download is under way: someone runs 'lifeboat delete' now
            repo.delete(backup)
            deleted.append(True)

    report = verify_backup(repo, backup, None, progress=delete_once)

    assert deleted and not report.ok
    assert_fails_as_deleted(report)


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_tmp_dir_that_is_missing_or_a_file_is_a_usage_error(
    cli: Cli, busy_etcd: EtcdMember, tmp_path: Path, kind: str
) -> None:
    where = tmp_path / "tmp"
    if kind == "file":
        where.write_text("")
    code, _out, err = cli("backup", f"--endpoints={busy_etcd.client_url}", "--repo", str(tmp_path / "repo"),
                          "--no-files", "--tmp-dir", str(where))
    assert code == 3 and "--tmp-dir" in err and err.count("\n") == 1
    assert cli.json("list", "--repo", str(tmp_path / "repo")) == []


def test_verify_of_a_backup_deleted_before_its_download_names_the_deletion_first(
    stored_backup: tuple[BackupRepository, Manifest]
) -> None:
    repo, backup = stored_backup
    repo.delete(backup)  # between finding it and reading its objects

    report = verify_backup(repo, backup, None)

    assert_fails_as_deleted(report)

"""What a command stopped by SIGTERM or Ctrl-C says it left behind."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from lifeboat.cli.main import _dispatch
from lifeboat.errors import Terminated


def interrupted(command: str, interruption: type[BaseException], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    def run(args: argparse.Namespace) -> int:
        raise interruption()

    code = _dispatch(argparse.Namespace(command=command, func=run, verbose=False))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("interruption", [Terminated, KeyboardInterrupt])
def test_an_interrupted_restore_says_how_to_resume_not_that_all_was_undone(
    capsys: pytest.CaptureFixture[str], interruption: type[BaseException]
) -> None:
    # SIGTERM can land after the old data dir was moved aside: the node is half restored.
    code, err = interrupted("restore", interruption, capsys)
    assert code in (130, 143) and err.count("\n") == 1
    assert "re-run the same command to resume" in err and "--rollback" in err
    assert "undone" not in err and "nothing was committed" not in err
    # "add --rollback" to 'restore ID ...' is refused: --rollback takes no backup id.
    assert "add --rollback" not in err and "instead of the backup id" in err


def test_an_interrupted_prune_says_a_half_deleted_backup_stays_listed(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = interrupted("prune", Terminated, capsys)
    assert code == 143 and "stays listed" in err and "undone" not in err


def test_an_interrupted_backup_still_says_it_left_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = interrupted("backup", Terminated, capsys)
    assert code == 143 and "no manifest, no upload and no spool" in err


@pytest.mark.parametrize("service", ["agent", "capture"])
def test_a_service_terminated_before_its_loop_runs_exits_0_as_documented(
    capsys: pytest.CaptureFixture[str], service: str
) -> None:
    """SIGTERM in an agent's or capture's first moments (loading its config and modules, before
    its own signal handling) exited 143, not 0 as documented for SIGTERM: a `systemctl stop` right
    after a start marked the unit failed."""
    code, err = interrupted(service, Terminated, capsys)
    assert code == 0 and err == "lifeboat: terminated (SIGTERM); stopped\n"


def test_a_backup_terminated_after_its_manifest_was_written_says_it_is_committed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """SIGTERM between the manifest's write and the report said "an interrupted backup leaves no
    manifest": the backup was committed and listed, and the operator was told it was undone."""
    from lifeboat.catalog.repository import BackupRepository
    from lifeboat.cli.main import main
    from lifeboat.etcd.memory import member_urls
    from tests.unit.capture.test_capture_loop import SnapshottingEtcd
    from tests.unit.snapshot.test_bbolt_synthetic import build as build_db

    etcd = SnapshottingEtcd(build_db(tmp_path / "base.db", [4]))

    class _Client:
        def __init__(self, settings: object) -> None:
            pass

        def __enter__(self) -> SnapshottingEtcd:
            return etcd

        def __exit__(self, *exc: object) -> None:
            return None

    real_commit = BackupRepository.commit

    def commit_then_sigterm(self: BackupRepository, manifest: object) -> None:
        real_commit(self, manifest)  # type: ignore[arg-type]
        raise Terminated()

    monkeypatch.setattr("lifeboat.etcd.EtcdClient", _Client)
    monkeypatch.setattr(BackupRepository, "commit", commit_then_sigterm)
    for var in ("LIFEBOAT_CONFIG", "LIFEBOAT_REPO", "LIFEBOAT_CLUSTER", "ETCDCTL_ENDPOINTS"):
        monkeypatch.delenv(var, raising=False)
    repo = tmp_path / "repo"
    code = main(["backup", "--repo", str(repo), "--endpoints", member_urls(1)[0], "--no-files",
                 "--tmp-dir", str(tmp_path)])
    err = capsys.readouterr().err
    [manifest] = list((repo / "clusters/default/manifests").glob("*.json"))
    assert code == 143 and err.count("\n") == 1
    assert f"backup {manifest.stem} was committed" in err and "no manifest" not in err

"""``latest`` without ``--cluster`` in a repository of several clusters is refused by every command."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lifeboat.catalog.repository import BackupRepository
from lifeboat.cli.main import main
from lifeboat.store import open_store
from tests.unit.retention.test_prune import store_backup

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)

COMMANDS = [
    ("show", "latest"),
    ("verify", "latest"),
    ("verify", "latest", "--drill"),
    ("pin", "latest"),
    ("unpin", "latest"),
    ("restore", "latest", "--dry-run", "--supervisor=none", "--name=m0", "--data-dir=DATA",
     "--initial-cluster=m0=https://127.0.0.1:2380", "--endpoints=127.0.0.1:1"),
    ("restore", "plan", "latest", "--initial-cluster=m0=https://127.0.0.1:2380"),
    ("k8s", "ls", "latest"),
    ("k8s", "get", "latest", "configmap/x", "-n", "default"),
    ("k8s", "diff", "latest", "latest"),
    ("k8s", "undelete", "--from", "latest", "-n", "default", "--endpoints=127.0.0.1:1"),
]


@pytest.fixture
def two_clusters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for var in ("LIFEBOAT_CONFIG", "LIFEBOAT_REPO", "LIFEBOAT_CLUSTER", "ETCDCTL_ENDPOINTS"):
        monkeypatch.delenv(var, raising=False)
    url = str(tmp_path / "repo")
    repo = BackupRepository.open(open_store(url), create=True)
    store_backup(repo, T0, cluster="a")
    store_backup(repo, T0 + timedelta(hours=1), cluster="s")  # the newest of any cluster
    return url


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_latest_without_cluster_is_refused_naming_the_clusters(
        two_clusters: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: tuple[str, ...]) -> None:
    argv = [arg.replace("DATA", str(tmp_path / "etcd")) for arg in command]
    code = main([*argv, "--repo", two_clusters])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "'latest' is ambiguous" in err and "clusters a, s" in err and "--cluster" in err
    assert len(list((tmp_path / "repo").rglob("manifests/*.json"))) == 2  # nothing was deleted


def test_latest_with_cluster_is_that_clusters_newest(two_clusters: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "latest", "--repo", two_clusters, "--cluster", "a", "-o", "json"]) == 0
    assert '"cluster": "a"' in capsys.readouterr().out


def test_latest_in_a_repository_of_one_cluster_needs_no_cluster(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIFEBOAT_CLUSTER", raising=False)
    url = str(tmp_path / "repo")
    store_backup(BackupRepository.open(open_store(url), create=True), T0, cluster="a")
    assert main(["show", "latest", "--repo", url]) == 0

"""A user or password in an etcd URL is refused (exit 3) and never shown.

etcd reads none from a URL; one written there was echoed by ``status`` and ``config show``,
recorded in the backup's manifest (``source.endpoint``) and repeated in ``restore plan``'s errors.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifeboat.catalog.repository import BackupRepository
from lifeboat.config.rules import holds_credentials
from lifeboat.store import open_store
from tests.support.cli import Cli
from tests.unit.retention.test_prune import store_backup

PASSWORD = "pa55w0rd"
ENDPOINTS = [f"http://admin:{PASSWORD}@127.0.0.1:1", f"https://admin:{PASSWORD}@[::1]:1/",
             f"admin:{PASSWORD}@127.0.0.1:1", f"http://{PASSWORD}@127.0.0.1:abc"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("LIFEBOAT_CONFIG", "LIFEBOAT_REPO", "LIFEBOAT_CLUSTER", "LIFEBOAT_ROOT", "ETCDCTL_ENDPOINTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "cache"))


def assert_refused_unshown(code: int, out: str, err: str) -> None:
    assert code == 3, err
    assert err.count("\n") == 1 and "user or password" in err
    assert PASSWORD not in out + err


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("command", [["status"], ["config", "show"], ["backup", "--no-files"]])
def test_an_endpoint_flag_with_credentials_is_refused_unshown(
        cli: Cli, tmp_path: Path, command: list[str], endpoint: str) -> None:
    code, out, err = cli(*command, "--endpoints", f"127.0.0.1:2,{endpoint}", "--repo", str(tmp_path / "repo"))
    assert_refused_unshown(code, out, err)
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("command", [["status"], ["config", "show"]])
def test_an_endpoint_with_credentials_from_the_environment_is_refused_unshown(
        cli: Cli, monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    monkeypatch.setenv("ETCDCTL_ENDPOINTS", ENDPOINTS[0])
    assert_refused_unshown(*cli(*command))


@pytest.mark.parametrize("command", [["config", "validate"], ["config", "show", "--config"]])
def test_an_endpoint_with_credentials_in_the_config_file_is_refused_unshown(
        cli: Cli, tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"etcd:\n  endpoints: [https://127.0.0.1:2379, '{ENDPOINTS[0]}']\n")
    assert_refused_unshown(*cli(*command, str(config)))


def restore_args(tmp_path: Path) -> list[str]:
    repo = tmp_path / "repo"
    store_backup(BackupRepository.open(open_store(str(repo)), create=True), datetime(2026, 11, 22, 3, tzinfo=UTC))
    return ["--repo", str(repo), "--data-dir", str(tmp_path / "etcd")]


@pytest.mark.parametrize("initial_cluster", [
    f"a=http://u:{PASSWORD}@10.0.0.2:2380",
    f"a=http://10.0.0.1:2380,http://u:{PASSWORD}@10.0.0.2:2380",
    f"a=http://u:{PASSWORD}@10.0.0.2:abc",
])
@pytest.mark.parametrize("command", [["restore", "plan", "latest"], ["restore", "latest", "--dry-run", "--name", "a"]])
def test_a_peer_url_with_credentials_in_the_initial_cluster_is_refused_unshown(
        cli: Cli, tmp_path: Path, command: list[str], initial_cluster: str) -> None:
    assert_refused_unshown(*cli(*command, *restore_args(tmp_path), "--initial-cluster", initial_cluster))


def test_an_advertised_peer_url_with_credentials_is_refused_unshown(cli: Cli, tmp_path: Path) -> None:
    assert_refused_unshown(*cli("restore", "latest", "--dry-run", "--name", "a", *restore_args(tmp_path),
                                "--initial-cluster", "a=http://10.0.0.2:2380",
                                "--initial-advertise-peer-urls", f"http://u:{PASSWORD}@10.0.0.2:2380"))


def test_member_replaces_peer_urls_are_checked_as_restores_are(cli: Cli) -> None:
    """--peer-urls went to etcd and the dry run's output unchecked: a password shown, a port of 'abc'."""
    assert_refused_unshown(*cli("member", "replace", "m1", "--dry-run", "--endpoints", "127.0.0.1:1",
                                "--peer-urls", f"http://u:{PASSWORD}@10.0.0.2:2380"))
    code, _, err = cli("member", "replace", "m1", "--dry-run", "--endpoints", "127.0.0.1:1",
                       "--peer-urls", "http://10.0.0.2:abc")
    assert code == 3 and "--peer-urls" in err and "is not a peer URL" in err, err


@pytest.mark.parametrize(("url", "held"), [
    ("http://u:p@h:1", True), ("u@h:1", True), ("https://u@[::1]:1/x", True), ("a=http://u:p@h:1", True),
    ("http://h:1", False), ("h:1", False), ("http://h:1/a@b", False), ("http://h:1?x=a@b", False),
])
def test_credentials_are_found_in_the_authority_only(url: str, held: bool) -> None:
    assert holds_credentials(url) is held

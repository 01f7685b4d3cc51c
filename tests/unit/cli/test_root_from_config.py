"""The config file's ``root`` is the host's root for every command that takes ``--config``:
etcd discovery from the kubeadm manifest, restore's member, data dir and supervisor, member
replace's data dir and status's quota all look under it, as backup's file capture did.
``--root`` and ``$LIFEBOAT_ROOT`` win over the file.

(Only the file capture read it: ``backup --config`` with ``root: /host`` captured /host's files
but looked for etcd in /etc/kubernetes, and ``restore --config`` acted on /.)
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifeboat.catalog.repository import BackupRepository
from lifeboat.cli.connect import etcd_settings, host_root
from lifeboat.cli.main import build_parser
from lifeboat.store import open_store
from tests.support.cli import Cli
from tests.support.kubeadm_node import KubeadmNode, make_kubeadm_node
from tests.unit.retention.test_prune import store_backup

# Every command with --root and an etcd connection, as run on a control-plane node.
ETCD_COMMANDS = {
    "backup": ("backup",),
    "capture": ("capture",),
    "status": ("status",),
    "member replace": ("member", "replace", "cp-1"),
    "snapshot save": ("snapshot", "save", "snap.db"),
    "restore": ("restore", "latest"),
    "k8s ls": ("k8s", "ls", "live"),
}


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KubeadmNode:
    for var in ("LIFEBOAT_CONFIG", "LIFEBOAT_ROOT", "LIFEBOAT_REPO", "LIFEBOAT_CLUSTER", "ETCDCTL_ENDPOINTS",
                "ETCDCTL_CACERT", "ETCDCTL_CERT", "ETCDCTL_KEY"):
        monkeypatch.delenv(var, raising=False)
    return make_kubeadm_node(tmp_path / "host")


def config_with_root(tmp_path: Path, root: Path) -> Path:
    path = tmp_path / "lifeboat.yaml"
    path.write_text(f"root: {root}\n")
    return path


def parsed(command: tuple[str, ...], *flags: str) -> argparse.Namespace:
    args = build_parser().parse_args([*command, *flags])
    assert hasattr(args, "root"), command
    return args


@pytest.mark.parametrize("name", ETCD_COMMANDS)
def test_etcd_is_found_from_the_kubeadm_manifest_under_the_config_files_root(
    node: KubeadmNode, tmp_path: Path, name: str,
) -> None:
    args = parsed(ETCD_COMMANDS[name], "--config", str(config_with_root(tmp_path, node.root)))
    resolved = etcd_settings(args)
    assert resolved.origin == f"kubeadm manifest {node.host('/etc/kubernetes/manifests/etcd.yaml')}"
    assert resolved.settings.endpoints[0] == "https://127.0.0.1:2379"
    assert resolved.settings.tls is not None
    assert resolved.settings.tls.ca == node.host("/etc/kubernetes/pki/etcd/ca.crt")


@pytest.mark.parametrize("name", ETCD_COMMANDS)
def test_root_flag_and_environment_win_over_the_config_file(
    node: KubeadmNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    config = str(config_with_root(tmp_path, node.root))
    args = parsed(ETCD_COMMANDS[name], "--config", config, "--root", str(other))
    assert host_root(args) == other
    assert etcd_settings(args).origin == "default"  # no manifest under other
    # --root / is given, not the default: it wins over the file too.
    assert host_root(parsed(ETCD_COMMANDS[name], "--config", config, "--root", "/")) == Path("/")

    monkeypatch.setenv("LIFEBOAT_ROOT", str(other))
    assert host_root(parsed(ETCD_COMMANDS[name], "--config", config)) == other
    # The flag wins over the environment, also when it names / (the default).
    assert host_root(parsed(ETCD_COMMANDS[name], "--config", config, "--root", "/")) == Path("/")


def test_without_flag_environment_or_file_the_root_is_slash(node: KubeadmNode) -> None:
    assert host_root(parsed(ETCD_COMMANDS["restore"])) == Path("/")


def test_restore_dry_run_plans_the_member_found_under_the_config_files_root(
    cli: Cli, node: KubeadmNode, tmp_path: Path,
) -> None:
    url = str(tmp_path / "repo")
    store_backup(BackupRepository.open(open_store(url), create=True), datetime(2026, 11, 22, 3, 0, tzinfo=UTC))
    config = config_with_root(tmp_path, node.root)
    # No --name, --data-dir or --supervisor: all three come from the etcd static pod under root.
    code, out, err = cli("restore", "latest", "--dry-run", "--force", "--repo", url, "--config", str(config),
                         "--endpoints", "127.0.0.1:1")
    assert code == 0, err
    assert f"as member cp-1 into {node.host('/var/lib/etcd')} [supervisor: kubeadm]" in out, out


def test_restore_takes_a_data_dir_as_a_host_path_under_the_config_files_root(
    cli: Cli, node: KubeadmNode, tmp_path: Path,
) -> None:
    config = config_with_root(tmp_path, node.root)
    code, _out, err = cli("restore", "latest", "--dry-run", "--repo", str(tmp_path / "repo"), "--config", str(config),
                          "--data-dir", "/no-such-dir/etcd")
    assert code == 3, err
    assert f"parent directory {node.root / 'no-such-dir'} does not exist" in err


def test_status_reads_the_quota_from_the_manifest_under_the_config_files_root(
    cli: Cli, node: KubeadmNode, tmp_path: Path,
) -> None:
    manifest = node.host("/etc/kubernetes/manifests/etcd.yaml")
    manifest.write_text(manifest.read_text().replace("    - --name=", "    - --quota-backend-bytes=lots\n    - --name="))
    code, _out, err = cli("status", "--config", str(config_with_root(tmp_path, node.root)))
    assert code == 3, err
    assert f"{manifest}: --quota-backend-bytes='lots'" in err


@pytest.mark.parametrize("name", ETCD_COMMANDS)
def test_a_relative_root_in_the_config_file_is_refused_naming_the_file_and_key(
    node: KubeadmNode, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
) -> None:
    # It was taken relative to whatever directory the command ran in: from the node's parent
    # directory, 'root: host' found the node; from anywhere else, nothing (or another tree).
    monkeypatch.chdir(node.root.parent)
    config = config_with_root(tmp_path, Path(node.root.name))
    code, out, err = cli(*ETCD_COMMANDS[name], "--config", str(config))
    assert (code, out) == (3, "")
    assert err == f"lifeboat: error: {config}: root: must be an absolute path such as /host, got 'host'\n"


def test_a_relative_root_flag_is_taken_from_the_directory_it_is_typed_in(
    node: KubeadmNode, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(node.root.parent)
    args = parsed(ETCD_COMMANDS["restore"], "--root", node.root.name)
    monkeypatch.chdir("/")  # the command's later work does not change what it means
    assert host_root(args) == node.root
    assert etcd_settings(args).origin == f"kubeadm manifest {node.host('/etc/kubernetes/manifests/etcd.yaml')}"


@pytest.mark.parametrize("name", ETCD_COMMANDS)
def test_a_root_that_is_not_a_directory_is_refused_not_read_as_an_empty_node(
        node: KubeadmNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli, name: str) -> None:
    """A mistyped --root read as a node with nothing on it: backup went on to etcd's default
    endpoint, without the node's certificates, and said only that nothing answered there."""
    repo = ("--repo", str(tmp_path / "repo")) if name in ("backup", "capture", "restore") else ()
    for given in (("--root", str(tmp_path / "hots")), ("--config", str(config_with_root(tmp_path, tmp_path / "hots")))):
        code, out, err = cli(*ETCD_COMMANDS[name], *given, *repo)
        assert (code, out) == (3, ""), err
        assert f"the host root {tmp_path / 'hots'}" in err and "is not a directory" in err and err.count("\n") == 1
    monkeypatch.setenv("LIFEBOAT_ROOT", str(node.host("/etc/kubernetes/admin.conf")))
    code, _, err = cli(*ETCD_COMMANDS[name], *repo)
    assert code == 3 and "(from environment) is not a directory" in err, err

"""``lifeboat restore plan``: each member's command restores what the plan was asked to restore,
the same way, when run on its own node, from any directory, without the plan's environment.

(The commands named only the backup, ``--cluster`` and ``--repo`` as typed: not the config file,
the identity files, ``$LIFEBOAT_REPO``, ``--root``, the writer or the revision bump, so a node
found no repository, could not decrypt, or bumped differently from its peers.)
"""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from pathlib import Path

import pyrage
import pytest

from lifeboat.catalog.repository import BackupRepository
from lifeboat.cli.connect import resolved_config
from lifeboat.cli.main import build_parser
from lifeboat.store import open_store
from tests.support.cli import Cli
from tests.unit.retention.test_prune import store_backup

INITIAL_CLUSTER = "m1=https://10.0.0.11:2380,m2=https://10.0.0.12:2380,m3=https://10.0.0.13:2380"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("LIFEBOAT_CONFIG", "LIFEBOAT_REPO", "LIFEBOAT_CLUSTER", "LIFEBOAT_ROOT", "ETCDCTL_ENDPOINTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "cache"))


def node_args(argv: list[str]) -> object:
    """The command as lifeboat parses it on the node."""
    assert argv[:2] == ["lifeboat", "restore"]
    return build_parser("restore").parse_args(argv[1:])


def test_each_members_command_carries_the_config_identities_repository_root_and_bump(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = tmp_path / "repo"
    stored = store_backup(BackupRepository.open(open_store(str(repo)), create=True), datetime(2026, 11, 22, 3, tzinfo=UTC))
    secret = str(pyrage.x25519.Identity.generate())
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "age-key.txt").write_text(secret + "\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "lifeboat.yaml").write_text("cluster: prod\nbackup: {zstd-level: 3}\n")
    planner = tmp_path / "planner"
    planner.mkdir()
    monkeypatch.chdir(planner)  # every path the plan is typed with is relative to where it runs
    # The environment, like the file, must give absolute paths (a relative one is refused).
    monkeypatch.setenv("LIFEBOAT_REPO", str(repo))

    plan = cli.json("restore", "plan", "latest", "--initial-cluster", INITIAL_CLUSTER,
                    "--config", "../etc/lifeboat.yaml", "--identity", "../keys/age-key.txt", "--root", "../host",
                    "--bump-revision", "0", "--restore-with", "tool", "--no-start")
    assert plan["backup_id"] == stored.id

    # On the node: another directory, none of the plan's environment.
    elsewhere = tmp_path / "elsewhere" / "deeper"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("LIFEBOAT_REPO")
    for member in plan["members"]:
        argv = shlex.split(member["command"])
        assert argv == member["argv"]
        assert argv[2] == stored.id
        assert secret not in member["command"]
        args = node_args(argv)
        node = resolved_config(args)
        assert node.path == tmp_path / "etc" / "lifeboat.yaml"
        assert node.config.cluster == "prod" and node.config.backup.zstd_level == 3
        assert Path(node.config.repository.url).absolute() == repo
        assert node.config.encryption.identity_files == [tmp_path / "keys" / "age-key.txt"]
        assert node.config.root == tmp_path / "host"
        assert not [word for word in argv if ".." in word or "planner" in word]
        assert (args.bump_revision, args.restore_with, args.no_start) == (0, "tool", True)  # type: ignore[attr-defined]
        assert args.name == member["name"] and args.initial_cluster == plan["initial_cluster"]  # type: ignore[attr-defined]
        assert args.initial_cluster_token == plan["token"]  # type: ignore[attr-defined]


def test_what_the_config_file_sets_comes_from_the_config_file_on_the_node(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = tmp_path / "repo"
    stored = store_backup(BackupRepository.open(open_store(str(repo)), create=True), datetime(2026, 11, 22, 3, tzinfo=UTC))
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"cluster: prod\nroot: /host\nrepository: {{url: 'file://{repo}'}}\n"
                      "encryption: {identity-files: [/etc/lifeboat/age-key.txt]}\n")
    monkeypatch.setenv("LIFEBOAT_CONFIG", str(config))  # the node may not have the variable
    plan = cli.json("restore", "plan", "latest", "--initial-cluster", INITIAL_CLUSTER)
    argv = plan["members"][0]["argv"]
    assert argv[:4] == ["lifeboat", "restore", stored.id, f"--config={config}"]
    # Named once, by the file: the node's command does not repeat (and so override) its values.
    assert not [word for word in argv if word.startswith(("--repo", "--identity", "--root"))]
    monkeypatch.delenv("LIFEBOAT_CONFIG")
    node = resolved_config(node_args(argv))
    assert node.config.repository.url == f"file://{repo}" and node.config.root == Path("/host")
    assert node.config.encryption.identity_files == [Path("/etc/lifeboat/age-key.txt")]


def test_a_plan_given_nothing_but_the_backup_adds_nothing(cli: Cli) -> None:
    plan = cli.json("restore", "plan", "20261122T030000Z-abcdef", "--initial-cluster", INITIAL_CLUSTER)
    assert plan["members"][0]["argv"] == [
        "lifeboat", "restore", "20261122T030000Z-abcdef", "--name=m1", f"--initial-cluster={INITIAL_CLUSTER}",
        f"--initial-cluster-token={plan['token']}", "--initial-advertise-peer-urls=https://10.0.0.11:2380"]


@pytest.mark.parametrize("initial_cluster", ["a=http://10.0.0.1:abc", "a=http://10.0.0.1:99999", "a=http://[::1]:x"])
@pytest.mark.parametrize("command", [["restore", "plan", "latest"], ["restore", "latest", "--dry-run", "--name", "a"]])
def test_a_peer_port_that_is_not_a_port_is_a_usage_error_not_a_crash(
    cli: Cli, tmp_path: Path, command: list[str], initial_cluster: str,
) -> None:
    repo = tmp_path / "repo"
    store_backup(BackupRepository.open(open_store(str(repo)), create=True), datetime(2026, 11, 22, 3, tzinfo=UTC))
    code, _out, err = cli(*command, "--repo", str(repo), "--initial-cluster", initial_cluster,
                          "--data-dir", str(tmp_path / "etcd"))
    assert code == 3, err
    assert err.count("\n") == 1 and "--initial-cluster" in err and "unexpected" not in err

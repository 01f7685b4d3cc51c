"""``restore --no-start``: a script restores every member's data, then starts them all."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lifeboat.etcd import ConnectionSettings, EtcdClient
from lifeboat.restore.journal import journal_path
from tests.support.binaries import EtcdRelease
from tests.support.cli import Cli
from tests.support.etcd import EtcdCluster
from tests.support.etcd_load import load_keys
from lifeboat.restore.supervisor import port_answers

pytestmark = pytest.mark.integration


def keyspace(url: str) -> dict[bytes, bytes]:
    with EtcdClient(ConnectionSettings((url,))) as c:
        return {kv.key: kv.value for kv in c.range_all(b"", prefix=True)}


def load_first(cluster: EtcdCluster, prefix: str, count: int) -> dict[bytes, bytes]:
    """``count`` keys under ``prefix`` written through the first member; the keyspace then."""
    url = cluster.first().client_url
    with EtcdClient(ConnectionSettings((url,))) as c:
        load_keys(c, [(f"{prefix}{i:04d}".encode(), b"v" * (100 + i)) for i in range(count)])
    return keyspace(url)


def lose_quorum(cluster: EtcdCluster) -> None:
    """Every member down, every disk but the first one's gone."""
    for member in cluster.members:
        member.kill()
    for lost in cluster.members[1:]:
        shutil.rmtree(lost.data_dir)


def start_all(cluster: EtcdCluster, plan: dict[str, object]) -> None:
    """Start every restored member (what the script's second part does) and wait for them."""
    for member in cluster.members:
        member.start(str(plan["initial_cluster"]), str(plan["token"]))
    for member in cluster.members:
        member.wait_healthy(60)


def test_every_member_restored_with_no_start_then_started_has_every_key(
    release35: EtcdRelease, cli: Cli, tmp_path: Path
) -> None:
    repo = f"file://{tmp_path / 'repo'}"
    cluster = EtcdCluster(release35, tmp_path / "etcd", size=3)
    with cluster:
        before = load_first(cluster, "/registry/configmaps/ns/cm-", 300)
        backup = cli.json("backup", f"--endpoints={cluster.first().client_url}", "--repo", repo, "--no-files")
        lose_quorum(cluster)
        plan = cli.json("restore", "plan", str(backup["id"]), "--initial-cluster", cluster.initial_cluster,
                        "--repo", repo, "--no-start")
        # The script: one member after the other, nothing started in between. A restore that
        # waited for etcd would fail here after --wait-timeout instead of returning.
        for member, step in zip(cluster.members, plan["members"]):
            assert "--no-start" in step["argv"]
            code, out, err = cli(*step["argv"][1:], f"--data-dir={member.data_dir}", "--supervisor=none",
                                 f"--endpoints={member.client_url}", "--wait-timeout=5")
            assert code == 0, err
            assert "etcd was not started" in out and "lifeboat status" in out
            assert (member.data_dir / "member" / "snap" / "db").is_file()
            assert not port_answers("127.0.0.1", member.client_port)
            assert '"finished": true' in journal_path(member.data_dir).read_text()

        start_all(cluster, plan)
        for member in cluster.members:
            assert keyspace(member.client_url) == before
        code, out, err = cli("status", f"--endpoints={','.join(cluster.endpoints)}")
        assert code == 0, out + err


def test_a_plans_commands_find_and_decrypt_the_backup_from_any_directory_without_its_environment(
    release35: EtcdRelease, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The plan is given the repository by the config file and the age identity by --identity,
    # both relative to where it runs; each member's command must carry both (it carried neither).
    import pyrage

    identity = pyrage.x25519.Identity.generate()
    (tmp_path / "keys").mkdir()
    key = tmp_path / "keys" / "age-key.txt"
    key.write_text(f"{identity}\n")
    key.chmod(0o600)
    (tmp_path / "etc").mkdir()
    config = tmp_path / "etc" / "lifeboat.yaml"
    config.write_text(f"repository: {{url: 'file://{tmp_path / 'repo'}'}}\n"
                      f"encryption: {{recipients: ['{identity.to_public()}']}}\n")
    for var in ("LIFEBOAT_CONFIG", "LIFEBOAT_REPO", "LIFEBOAT_CLUSTER", "LIFEBOAT_ROOT", "ETCDCTL_ENDPOINTS"):
        monkeypatch.delenv(var, raising=False)
    cluster = EtcdCluster(release35, tmp_path / "etcd", size=3)
    with cluster:
        before = load_first(cluster, "/registry/secrets/ns/s-", 200)
        backup = cli.json("backup", f"--endpoints={cluster.first().client_url}", "--config", str(config), "--no-files")
        assert backup["encryption"]
        lose_quorum(cluster)
        monkeypatch.chdir(tmp_path / "etc")
        plan = cli.json("restore", "plan", "latest", "--initial-cluster", cluster.initial_cluster,
                        "--config", "lifeboat.yaml", "--identity", "../keys/age-key.txt", "--no-start")
        monkeypatch.chdir(tmp_path / "etcd")  # each node runs its command from wherever its shell is
        for member, step in zip(cluster.members, plan["members"]):
            assert step["argv"][2] == backup["id"] and str(identity) not in step["command"]
            code, _out, err = cli(*step["argv"][1:], f"--data-dir={member.data_dir}", "--supervisor=none",
                                  f"--endpoints={member.client_url}", "--wait-timeout=5")
            assert code == 0, err

        start_all(cluster, plan)
        for member in cluster.members:
            assert keyspace(member.client_url) == before


def test_a_data_dir_emptied_by_hand_is_restored_into(release35: EtcdRelease, cli: Cli, tmp_path: Path) -> None:
    """The old wiki's 'rm -rf /var/lib/etcd/member' leaves an empty data dir: lifeboat refused it as
    "not an etcd data dir". It is moved aside (empty, kept) and restored into."""
    repo = f"file://{tmp_path / 'repo'}"
    cluster = EtcdCluster(release35, tmp_path / "etcd", size=1)
    with cluster:
        before = load_first(cluster, "/registry/configmaps/ns/cm-", 50)
        backup = cli.json("backup", f"--endpoints={cluster.first().client_url}", "--repo", repo, "--no-files")
        member = cluster.first()
        member.kill()
        shutil.rmtree(member.data_dir / "member")
        plan = cli.json("restore", "plan", str(backup["id"]), "--initial-cluster", cluster.initial_cluster,
                        "--repo", repo, "--no-start")
        step = plan["members"][0]  # type: ignore[index]
        code, out, err = cli(*step["argv"][1:], f"--data-dir={member.data_dir}", "--supervisor=none",
                             f"--endpoints={member.client_url}", "-o", "json")
        assert code == 0, err
        moved = Path(json.loads(out)["moved_aside"])
        assert moved.is_dir() and list(moved.iterdir()) == []
        start_all(cluster, plan)
        assert keyspace(member.client_url) == before

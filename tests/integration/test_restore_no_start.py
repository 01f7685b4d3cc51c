"""``restore --no-start``: a script restores every member's data, then starts them all."""

from __future__ import annotations

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


def test_every_member_restored_with_no_start_then_started_has_every_key(
    release35: EtcdRelease, cli: Cli, tmp_path: Path
) -> None:
    repo = f"file://{tmp_path / 'repo'}"
    cluster = EtcdCluster(release35, tmp_path / "etcd", size=3)
    with cluster:
        first = cluster.first()
        with EtcdClient(ConnectionSettings((first.client_url,))) as c:
            load_keys(c, [(f"/registry/configmaps/ns/cm-{i:04d}".encode(), b"v" * (100 + i)) for i in range(300)])
        before = keyspace(first.client_url)
        backup = cli.json("backup", f"--endpoints={first.client_url}", "--repo", repo, "--no-files")
        for member in cluster.members:  # quorum lost: every member down, two disks gone
            member.kill()
        for lost in cluster.members[1:]:
            shutil.rmtree(lost.data_dir)

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

        for member in cluster.members:
            member.start(str(plan["initial_cluster"]), str(plan["token"]))
        for member in cluster.members:
            member.wait_healthy(60)
        for member in cluster.members:
            assert keyspace(member.client_url) == before
        code, out, err = cli("status", f"--endpoints={','.join(cluster.endpoints)}")
        assert code == 0, out + err

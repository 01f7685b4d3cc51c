"""A resumed restore goes on as the member it was journaled as, or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeboat.restore.journal import Journal, journal_path, load_journal, save_journal
from tests.support.cli import Cli

CLUSTER = "m1=http://127.0.0.1:2380,m2=http://127.0.0.2:2380,m3=http://127.0.0.3:2380"


@pytest.mark.parametrize(("flags", "named"), [
    (["--name", "m2", "--initial-cluster", CLUSTER], "--name m2 (journaled: m1)"),
    (["--name", "m1", "--initial-cluster", "m1=http://127.0.0.1:2380"], "--initial-cluster"),
    (["--name", "m1", "--initial-cluster", CLUSTER, "--initial-cluster-token", "other"], "--initial-cluster-token"),
])
def test_resuming_as_another_member_or_cluster_than_journaled_is_refused(
    cli: Cli, tmp_path: Path, flags: list[str], named: str,
) -> None:
    """The resumed restore took --name, --initial-cluster and --initial-cluster-token as given,
    not as journaled: the plan's command of another node, run here after a crash in restore-data,
    wrote this node's data dir as that other member (two m2s, one cluster broken)."""
    data_dir = tmp_path / "etcd"
    path = journal_path(data_dir)
    journal = Journal("20240101T000000Z-abcdef", "prod", str(data_dir), "m1", CLUSTER, "tok-1", "20240102T030405Z",
                      done=("preflight", "fetch-snapshot", "stop:etcd", "move-aside"), node_changed=True,
                      state={"moved_aside": str(tmp_path / "etcd.lifeboat-moved-20240102T030405Z")})
    save_journal(path, journal)
    code, _out, err = cli("restore", "latest", "--repo", str(tmp_path / "no-repo"), "--supervisor", "none",
                          "--data-dir", str(data_dir), "--initial-advertise-peer-urls",
                          "http://127.0.0.2:2380" if "m2" in flags else "http://127.0.0.1:2380", *flags)
    assert code == 3, err
    assert err.count("\n") == 1 and named in err and "--rollback" in err and str(path) in err, err
    assert load_journal(path) == journal

"""The test controllers themselves work: a real etcd over mTLS starts, answers, and stops."""

from __future__ import annotations

from pathlib import Path

from tests.support.binaries import EtcdRelease
from tests.support.etcd import EtcdCluster
from tests.support.pki import Pki


def test_mtls_member_serves_puts_and_stops(release: EtcdRelease, pki: Pki, tmp_path: Path) -> None:
    with EtcdCluster(release, tmp_path, pki=pki) as cluster:
        m = cluster.first()
        m.etcdctl("put", "/registry/x", "y")
        assert m.etcdctl("get", "/registry/x", "--print-value-only").strip() == "y"
        proc = m.process
    assert proc is not None and proc.poll() is not None

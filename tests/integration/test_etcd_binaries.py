"""etcd's binaries: the restore tool with the real etcdutl 3.5.1 and etcdctl 3.4.23: restore, start, read."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lifeboat.errors import OperationFailed, UsageError
from lifeboat.etcd import ConnectionSettings, EtcdClient
from lifeboat.etcd.binaries import RestoreTool, SnapshotRestore, find_restore_tool, probe_restore_tool
from lifeboat.etcd.local import LocalEtcd, peer_url
from tests.support.binaries import EtcdRelease
from tests.support.etcd import EtcdCluster
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


def saved_snapshot(release: EtcdRelease, work: Path) -> Path:
    """A snapshot of a fresh etcd of ``release`` holding /drill/key=restored."""
    target = work / f"snapshot-{release.version}.db"
    with EtcdCluster(release, work / f"etcd-{release.version}") as cluster:
        member = cluster.first()
        with EtcdClient(ConnectionSettings((member.client_url,))) as client:
            client.put(b"/drill/key", b"restored")
        subprocess.run([str(release.etcdctl), f"--endpoints={member.client_url}", "snapshot",
                        "save", str(target)], env={"ETCDCTL_API": "3"}, check=True,
                       capture_output=True)
    return target


def restore_and_read(tool: RestoreTool, etcd: Path, snapshot: Path, work: Path) -> bytes | None:
    client_port, peer_port = free_port(), free_port()
    data = work / "restored"
    tool.run(SnapshotRestore(snapshot, data, "solo", f"solo={peer_url(peer_port)}", "tok", peer_url(peer_port)))
    with LocalEtcd(etcd, "solo", data, work / "etcd.log", client_port, peer_port) as server:
        server.wait_ready(30)
        with server.client() as client:
            kv = client.get(b"/drill/key")
    return kv.value if kv else None


def test_version_appropriate_tool_restores_its_own_snapshot(release: EtcdRelease, tmp_path: Path) -> None:
    snapshot = saved_snapshot(release, tmp_path)
    tool = find_restore_tool(snapshot_version=release.version,
                             search_path=str(release.etcdctl.parent))
    assert tool.kind == ("etcdutl" if release.etcdutl else "etcdctl")
    assert tool.version == release.version
    assert not tool.can_bump_revision  # 3.5.1 and 3.4.23 predate --bump-revision
    assert restore_and_read(tool, release.etcd, snapshot, tmp_path) == b"restored"


def test_etcdutl_35_restores_a_34_snapshot_that_etcd_35_serves(
    release34: EtcdRelease, release35: EtcdRelease, tmp_path: Path
) -> None:
    assert release35.etcdutl is not None
    snapshot = saved_snapshot(release34, tmp_path)
    tool = find_restore_tool(release35.etcdutl, snapshot_version=release34.version)
    assert restore_and_read(tool, release35.etcd, snapshot, tmp_path) == b"restored"


def test_etcdctl_34_refuses_a_35_snapshot(release34: EtcdRelease) -> None:
    tool = probe_restore_tool(release34.etcdctl)
    with pytest.raises(UsageError, match=r"etcdctl 3\.4\.23 .*cannot restore a snapshot from etcd 3\.5\.1"):
        tool.check_compatible("3.5.1")


def test_etcdctl_35_is_not_taken_for_a_restore_tool(release35: EtcdRelease) -> None:
    with pytest.raises(UsageError, match="only etcdctl 3.4"):
        probe_restore_tool(release35.etcdctl)


def test_corrupt_snapshot_fails_with_the_tools_own_error(release: EtcdRelease, tmp_path: Path) -> None:
    snapshot = saved_snapshot(release, tmp_path)
    data = bytearray(snapshot.read_bytes())
    data[-1] ^= 0xFF  # the sha256 trailer etcd appended no longer matches
    snapshot.write_bytes(bytes(data))
    tool = find_restore_tool(snapshot_version=release.version,
                             search_path=str(release.etcdctl.parent))
    with pytest.raises(OperationFailed, match=r"snapshot restore into .* failed \(exit 1\): Error: expected sha256"):
        tool.run(SnapshotRestore(snapshot, tmp_path / "data", "solo", "solo=http://127.0.0.1:1", "t",
                                 "http://127.0.0.1:1"))

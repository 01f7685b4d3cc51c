"""Putting control-plane files back: each existing file is moved aside first, held manifests stay held."""

from __future__ import annotations

from pathlib import Path

from lifeboat.backup.control_plane import capture
from lifeboat.restore.files import install_archive
from tests.support.kubeadm_node import make_kubeadm_node


def test_restored_files_replace_current_ones_which_are_moved_aside(tmp_path: Path) -> None:
    node = make_kubeadm_node(tmp_path / "node")
    archive = tmp_path / "work" / "control-plane.tar"
    archive.parent.mkdir()
    with archive.open("wb") as out:
        capture(node.root, out)
    ca = node.host("/etc/kubernetes/pki/ca.crt")
    original = ca.read_text()
    ca.write_text("a new CA someone made after the backup\n")
    node.host("/etc/kubernetes/admin.conf").unlink()
    etcd_yaml = node.host("/etc/kubernetes/manifests/etcd.yaml").read_text()

    held = "/etc/kubernetes/lifeboat-held-manifests/etcd.yaml"
    written = install_archive(archive, node.root, "STAMP",
                              lambda p: held if p.endswith("manifests/etcd.yaml") else p)

    assert "/etc/kubernetes/pki/ca.crt" in written
    assert ca.read_text() == original and oct(ca.stat().st_mode & 0o777) == oct(0o644)
    assert node.host("/etc/kubernetes/pki/ca.crt.lifeboat-moved-STAMP").read_text().startswith("a new CA")
    assert node.host("/etc/kubernetes/admin.conf").exists()
    assert node.host(held).read_text() == etcd_yaml  # the kubelet does not see it yet
    assert not (archive.parent / "control-plane-files").exists()

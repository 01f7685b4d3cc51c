"""Putting control-plane files back: each existing file is moved aside first, held manifests stay held."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeboat.backup.control_plane import capture
from lifeboat.errors import OperationFailed
from lifeboat.restore.files import install_archive
from tests.support.kubeadm_node import KubeadmNode, make_kubeadm_node


def node_and_archive(tmp_path: Path) -> tuple[KubeadmNode, Path]:
    """A kubeadm node and the archive of its control-plane files."""
    node = make_kubeadm_node(tmp_path / "node")
    archive = tmp_path / "work" / "control-plane.tar"
    archive.parent.mkdir()
    with archive.open("wb") as out:
        capture(node.root, out)
    return node, archive


def test_restored_files_replace_current_ones_which_are_moved_aside(tmp_path: Path) -> None:
    node, archive = node_and_archive(tmp_path)
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


def test_a_file_is_never_replaced_when_its_moved_aside_name_is_taken_by_another_restore(tmp_path: Path) -> None:
    # Two restores with one stamp (same second): the second found the first's aside name taken,
    # skipped the move and replaced the current file, which was then kept nowhere.
    node, archive = node_and_archive(tmp_path)
    ca = node.host("/etc/kubernetes/pki/ca.crt")
    aside = node.host("/etc/kubernetes/pki/ca.crt.lifeboat-moved-STAMP")
    aside.write_text("the CA the first restore moved aside\n")
    ca.write_text("the CA made after the first restore\n")

    with pytest.raises(OperationFailed, match=r"ca\.crt\.lifeboat-moved-STAMP already exists.*nothing of it was changed"):
        install_archive(archive, node.root, "STAMP")

    assert ca.read_text() == "the CA made after the first restore\n"
    assert aside.read_text() == "the CA the first restore moved aside\n"


def test_a_resumed_restore_finds_its_own_file_in_place_and_goes_on(tmp_path: Path) -> None:
    node, archive = node_and_archive(tmp_path)
    ca = node.host("/etc/kubernetes/pki/ca.crt")
    original = ca.read_text()
    ca.write_text("a CA made after the backup\n")
    install_archive(archive, node.root, "STAMP")

    install_archive(archive, node.root, "STAMP")  # the same step again, as a resumed restore runs it

    assert ca.read_text() == original
    assert node.host("/etc/kubernetes/pki/ca.crt.lifeboat-moved-STAMP").read_text() == "a CA made after the backup\n"

"""Putting control-plane files back: each existing file is moved aside first, held manifests stay held."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from lifeboat.backup.control_plane import capture
from lifeboat.kube.control_plane_files import control_plane_paths
from lifeboat.catalog.codec import encode
from lifeboat.catalog.ids import new_backup_id
from lifeboat.catalog.layout import FILES_OBJECT
from lifeboat.catalog.repository import BackupRepository
from lifeboat.durable import part_path
from lifeboat.errors import LifeboatError, OperationFailed
from lifeboat.restore.files import fetch_archive, install_archive
from lifeboat.store.memory import Fault, MemoryStore
from tests.support.kubeadm_node import KubeadmNode, make_kubeadm_node
from tests.support.manifests import stored_object
from tests.unit.catalog.test_repository import T0, manifest


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


@pytest.mark.parametrize("fault", [
    Fault("get_stream", after_bytes=1024),  # the download breaks off
    None,  # complete, but one file differs from the manifest's sha256
], ids=["interrupted", "damaged"])
def test_a_fetched_archive_is_at_its_name_only_once_complete_and_checked(
        tmp_path: Path, fault: Fault | None) -> None:
    # The journal then marks fetch-files done, and a resumed restore installs that file as it is.
    node, archive = node_and_archive(tmp_path)
    with archive.open("wb") as out:
        files = capture(node.root, out)
    store = MemoryStore()
    repo = BackupRepository.open(store, create=True)
    stored = b"".join(encode([archive.read_bytes()], 1, []))
    m = manifest(new_backup_id(T0)).model_copy(update={"files": tuple(files), "objects": (
        stored_object(), stored_object(FILES_OBJECT, len(stored)))})
    store.put_bytes(repo.object_key(m, FILES_OBJECT), stored)
    store.put_bytes(repo.object_key(m, "snapshot.db.zst"), b"x" * 100)
    repo.commit(m)
    fetched = tmp_path / "work" / "fetched.tar"
    if fault is not None:
        store.inject(fault)
    else:
        m = m.model_copy(update={"files": (dataclasses.replace(files[0], sha256="00" * 32), *files[1:])})
    with pytest.raises(LifeboatError):
        fetch_archive(repo, m, None, fetched)
    assert not fetched.exists() and not part_path(fetched).exists()
    fetch_archive(repo, repo.find(m.id, "prod"), None, fetched)
    assert fetched.read_bytes() == archive.read_bytes() and not part_path(fetched).exists()


def test_each_file_is_on_disk_before_its_name_and_its_directory_after(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    node, archive = node_and_archive(tmp_path)
    for changed in node.host("/etc/kubernetes").rglob("*"):  # each one other than the backup's: put back
        if changed.is_file() and not changed.is_symlink():
            changed.write_text("changed after the backup\n")
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        events.append(("rename", str(target)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    install_archive(archive, node.root, "STAMP")

    ca = str(node.host("/etc/kubernetes/pki/ca.crt"))
    renamed = events.index(("rename", ca))
    assert events[renamed - 1] == ("fsync", ca.replace("ca.crt", ".ca.crt.lifeboat-new"))
    assert events[renamed + 1] == ("fsync", str(node.host("/etc/kubernetes/pki")))
    installed = [target for kind, target in events if kind == "rename" and target.startswith(str(node.root))]
    assert len(installed) > 5 and all(
        events[events.index(("rename", target)) + 1] == ("fsync", str(Path(target).parent)) for target in installed)


def test_a_file_already_as_the_backup_has_it_is_left_alone_even_by_a_resumed_restore(tmp_path: Path) -> None:
    """Every file was moved aside, identical or not: a restore onto the same node left a copy of each
    beside it (the kubelet reads every file of its manifests dir), and a restore resumed after it
    had put a file where the node had none moved its own file aside as if it were the node's."""
    node, archive = node_and_archive(tmp_path)
    node.host("/etc/kubernetes/admin.conf").unlink()
    node.host("/etc/kubernetes/pki/ca.crt").write_text("a CA made after the backup\n")
    node.host("/etc/kubernetes/pki/ca.key").chmod(0o644)  # same bytes, another mode: put back

    install_archive(archive, node.root, "STAMP")
    install_archive(archive, node.root, "STAMP")  # killed after the files were in place, resumed

    asides = sorted(str(p.relative_to(node.root)) for p in node.root.rglob("*.lifeboat-moved-*"))
    assert asides == ["etc/kubernetes/pki/ca.crt.lifeboat-moved-STAMP", "etc/kubernetes/pki/ca.key.lifeboat-moved-STAMP"]
    assert oct(node.host("/etc/kubernetes/pki/ca.key").stat().st_mode & 0o777) == oct(0o600)
    assert node.host("/etc/kubernetes/admin.conf").is_file()


def test_a_replaced_static_pod_manifest_is_kept_where_the_kubelet_does_not_run_it(tmp_path: Path) -> None:
    """The copy of a replaced manifest was kept as kube-scheduler.yaml.lifeboat-moved-<stamp> in the
    manifests dir: the kubelet runs every file there whose name does not start with '.', so it saw two
    pods of one name, and every later backup captured the copy as a static pod."""
    node, archive = node_and_archive(tmp_path)
    scheduler = node.host("/etc/kubernetes/manifests/kube-scheduler.yaml")
    scheduler.write_text(scheduler.read_text() + "# edited after the backup\n")

    install_archive(archive, node.root, "STAMP")

    manifests = node.host("/etc/kubernetes/manifests")
    aside = manifests / ".kube-scheduler.yaml.lifeboat-moved-STAMP"
    assert aside.read_text().endswith("# edited after the backup\n")
    assert not [p.name for p in manifests.iterdir() if "lifeboat" in p.name and not p.name.startswith(".")]
    assert "/etc/kubernetes/manifests/.kube-scheduler.yaml.lifeboat-moved-STAMP" not in control_plane_paths(node.root)

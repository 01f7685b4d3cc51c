"""A forged control-plane archive (backups are not signed) puts nothing outside what lifeboat captures,
no set-id bits, and nothing through a directory another local user could change."""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest

from lifeboat.backup.control_plane import capture
from lifeboat.errors import IntegrityError, OperationFailed
from lifeboat.restore.files import check_archive, install_archive
from tests.support.forged_archive import Member, forged
from tests.support.kubeadm_node import KubeadmNode, make_kubeadm_node, write

OTHER_USER = 4242


def node_and_archive(tmp_path: Path, *extra: Member, change: object = None) -> tuple[KubeadmNode, Path]:
    """A kubeadm node and its captured archive, forged with ``extra`` members."""
    node = make_kubeadm_node(tmp_path / "node")
    archive = tmp_path / "work" / "control-plane.tar"
    archive.parent.mkdir(mode=0o700)
    with archive.open("wb") as out:
        capture(node.root, out)
    kwargs = {} if change is None else {"change": change}
    archive.write_bytes(forged(archive.read_bytes(), *extra, **kwargs))  # type: ignore[arg-type]
    return node, archive


def host_state(tmp_path: Path) -> dict[str, tuple[int, int, bytes | str]]:
    """Every entry under ``tmp_path`` but lifeboat's work dir: (mode, uid, content or link target)."""
    state: dict[str, tuple[int, int, bytes | str]] = {}
    for directory, dirnames, filenames in os.walk(tmp_path):
        for name in dirnames + filenames:
            path = Path(directory, name)
            if "work" in path.relative_to(tmp_path).parts[:1]:
                continue
            st = os.lstat(path)
            content: bytes | str = (os.readlink(path) if stat.S_ISLNK(st.st_mode)
                                    else path.read_bytes() if stat.S_ISREG(st.st_mode) else "")
            state[str(path)] = (st.st_mode, st.st_uid, content)
    return state


def refused_without_a_change(tmp_path: Path, node: KubeadmNode, archive: Path,
                             error: type[Exception], match: str) -> None:
    node.host("/etc/kubernetes/pki/ca.crt").write_text("the CA made after the backup\n")
    before = host_state(tmp_path)
    with pytest.raises(error, match=match):
        check_archive(archive, node.root)
    with pytest.raises(error, match=match):
        install_archive(archive, node.root, "STAMP")
    assert host_state(tmp_path) == before
    assert not (archive.parent / "control-plane-files").exists()


@pytest.mark.parametrize("name", [
    "etc/cron.d/lifeboat",
    "root/.ssh/authorized_keys",
    "etc/kubernetes/tmp/kubeadm-backup-manifests/etcd.yaml",  # beside the captured files, not one of them
    "etc/kubernetes/manifests/.hidden.yaml",  # the kubelet ignores it, so lifeboat does not capture it
    "etc/kubernetes/manifests/sub/pod.yaml",
    "etc/kubernetes/admin.conf.old",
    "var/lib/kubelet/kubeconfig",
])
def test_a_forged_file_outside_what_lifeboat_captures_refuses_every_file(tmp_path: Path, name: str) -> None:
    node, archive = node_and_archive(tmp_path, Member(name, b"* * * * * root sh -c id\n"))
    refused_without_a_change(tmp_path, node, archive, IntegrityError, f"holds /{name}, which is not a file lifeboat")
    assert not node.host("/" + name).exists()


def test_a_forged_encryption_config_other_than_the_one_the_apiserver_names_is_refused(tmp_path: Path) -> None:
    # The node's kube-apiserver names /etc/kubernetes/enc/enc.yaml: a file beside it is not captured.
    node, archive = node_and_archive(tmp_path, Member("etc/kubernetes/enc/other.yaml", b"kind: EncryptionConfiguration"))
    refused_without_a_change(tmp_path, node, archive, IntegrityError, "holds /etc/kubernetes/enc/other.yaml")


@pytest.mark.parametrize("members", [
    [Member("etc/kubernetes/pki/../../cron.d/x", b"x")],
    [Member("/etc/cron.d/x", b"x")],
    [Member("etc/kubernetes/pki/escape", kind=tarfile.SYMTYPE, link="/etc/cron.d"),
     Member("etc/kubernetes/pki/escape/x", b"x")],
], ids=["dotdot", "absolute", "through-an-archived-symlink"])
def test_a_forged_path_that_escapes_is_refused(tmp_path: Path, members: list[Member]) -> None:
    outside = tmp_path / "node/etc/cron.d"
    node, archive = node_and_archive(tmp_path, *members)
    refused_without_a_change(tmp_path, node, archive, IntegrityError, "refusing it")
    assert not outside.exists()


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.DIRTYPE, tarfile.LNKTYPE],
                         ids=["char-device", "block-device", "fifo", "directory", "hard-link"])
def test_a_forged_member_that_is_not_a_file_or_symlink_is_refused(tmp_path: Path, kind: bytes) -> None:
    # A directory member once verified as an empty file: the restore then moved the host's file
    # aside and failed to install a directory in its place.
    node, archive = node_and_archive(tmp_path, Member("etc/kubernetes/pki/zz-extra", kind=kind,
                                                      link="etc/kubernetes/pki/ca.key"))
    refused_without_a_change(tmp_path, node, archive, IntegrityError, "neither a file nor a symlink")


def test_set_id_and_sticky_bits_are_never_installed(tmp_path: Path) -> None:
    def set_id(info: tarfile.TarInfo) -> None:
        if info.name.endswith(("ca.crt", "admin.conf", "kube-apiserver.yaml")):
            info.mode |= stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | 0o111
    node, archive = node_and_archive(tmp_path, change=set_id)

    install_archive(archive, node.root, "STAMP")

    for path in ("/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/admin.conf",
                 "/etc/kubernetes/manifests/kube-apiserver.yaml"):
        mode = stat.S_IMODE(node.host(path).stat().st_mode)
        assert mode & 0o111 and not mode & 0o7000, (path, oct(mode))


def test_a_symlinks_target_outside_the_kubeadm_trees_is_restored_as_lifeboat_captured_it(tmp_path: Path) -> None:
    node = make_kubeadm_node(tmp_path / "node")
    write(node.host("/srv/pki/front-proxy-ca.crt"), "a CA kept elsewhere\n")
    node.host("/etc/kubernetes/pki/front-proxy-ca.crt").unlink()
    os.symlink("/srv/pki/front-proxy-ca.crt", node.host("/etc/kubernetes/pki/front-proxy-ca.crt"))
    archive = tmp_path / "work" / "control-plane.tar"
    archive.parent.mkdir(mode=0o700)
    with archive.open("wb") as out:
        capture(node.root, out)
    node.host("/srv/pki/front-proxy-ca.crt").unlink()

    assert "/srv/pki/front-proxy-ca.crt" in install_archive(archive, node.root, "STAMP")
    assert node.host("/srv/pki/front-proxy-ca.crt").read_text() == "a CA kept elsewhere\n"


@pytest.mark.parametrize("how", ["directory-of-another-user", "symlink-of-another-user",
                                 "directory-writable-by-others", "symlink-in-a-directory-writable-by-others"])
def test_nothing_is_written_through_a_host_directory_another_user_could_change(tmp_path: Path, how: str) -> None:
    node, archive = node_and_archive(tmp_path)
    elsewhere = tmp_path / "node/elsewhere"
    elsewhere.mkdir()
    pki = node.host("/etc/kubernetes/pki/etcd")
    if how == "directory-of-another-user":
        os.chown(pki, OTHER_USER, OTHER_USER)
    elif how == "directory-writable-by-others":
        pki.chmod(0o777)
    else:
        pki.rename(tmp_path / "node/old-etcd-pki")
        os.symlink(elsewhere, pki)
        if how == "symlink-of-another-user":
            os.lchown(pki, OTHER_USER, OTHER_USER)
        else:
            pki.parent.chmod(0o777)
    refused_without_a_change(tmp_path, node, archive, OperationFailed,
                             r"cannot restore /etc/kubernetes/pki/.*(belongs to uid 4242|writable by others)")
    assert list(elsewhere.iterdir()) == []


def test_a_root_owned_symlinked_directory_is_written_through(tmp_path: Path) -> None:
    # An operator who keeps the pki elsewhere and links it: the restore writes where the link points.
    node, archive = node_and_archive(tmp_path)
    elsewhere = tmp_path / "node/srv/etcd-pki"
    elsewhere.mkdir(parents=True)
    pki = node.host("/etc/kubernetes/pki/etcd")
    pki.rename(tmp_path / "node/old-etcd-pki")
    os.symlink(elsewhere, pki)

    install_archive(archive, node.root, "STAMP")

    assert (elsewhere / "ca.crt").is_file() and pki.is_symlink()


def test_a_forged_encryption_config_never_replaces_a_host_directory(tmp_path: Path) -> None:
    """The encryption config is captured wherever kube-apiserver's manifest says: a forged manifest
    naming /usr/bin had the restore move the host's /usr/bin aside and put a file there."""
    def names_usr_bin(info: tarfile.TarInfo) -> None:
        if info.name == "etc/kubernetes/enc/enc.yaml":
            info.name = "usr/bin"
    node, archive = node_and_archive(tmp_path, change=names_usr_bin)
    manifest = node.host("/etc/kubernetes/manifests/kube-apiserver.yaml")
    forged_manifest = manifest.read_text().replace("/etc/kubernetes/enc/enc.yaml", "/usr/bin")
    assert forged_manifest != manifest.read_text()
    archive.write_bytes(forged(archive.read_bytes(), content={
        "etc/kubernetes/manifests/kube-apiserver.yaml": forged_manifest.encode()}))
    write(node.host("/usr/bin/sh"), "#!the host's shell\n", 0o755)
    refused_without_a_change(tmp_path, node, archive, IntegrityError, "would replace the directory /usr/bin")

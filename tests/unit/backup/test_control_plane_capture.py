"""Capturing kubeadm control-plane files into a PAX tar, verifying and extracting it."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from lifeboat.errors import IntegrityError, OperationFailed
from lifeboat.backup.control_plane import capture, collect
from lifeboat.catalog.file_archive import (
    CapturedFile, archive_files, extract_archive, verify_archive, write_archive,
)
from lifeboat.catalog.manifest import BackupStatus, Manifest
from tests.support.binaries import tool
from tests.support.kubeadm_node import APISERVER_YAML, KubeadmNode, make_kubeadm_node, write
from tests.support.manifests import SOURCE, snapshot_info, stored_object

BIG = "/etc/kubernetes/pki/big-bundle.crt"


@pytest.fixture
def node(tmp_path: Path) -> KubeadmNode:
    return make_kubeadm_node(tmp_path / "node")


def archive_of(node: KubeadmNode) -> tuple[bytes, list[CapturedFile]]:
    out = io.BytesIO()
    entries = capture(node.root, out)
    return out.getvalue(), entries


def test_collection_is_exactly_the_kubeadm_control_plane_files(node: KubeadmNode) -> None:
    assert {entry.path for entry in collect(node.root)} == node.expected_files()


def test_collected_entries_keep_mode_owner_mtime_size_and_sha256(node: KubeadmNode) -> None:
    entries = collect(node.root)
    assert entries == sorted(entries, key=lambda entry: entry.path)
    for entry in entries:
        local = node.host(entry.path)
        st = os.lstat(local)
        data = local.read_bytes()
        assert entry.kind == "file"
        assert (entry.mode, entry.uid, entry.gid) == (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        assert (entry.mtime_ns, entry.size) == (st.st_mtime_ns, len(data))
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
    by_path = {entry.path: entry for entry in entries}
    assert by_path["/etc/kubernetes/pki/ca.key"].mode == 0o600
    assert by_path["/etc/kubernetes/pki/ca.crt"].mode == 0o644
    assert by_path["/etc/kubernetes/pki/ca.key"].mtime_ns % 1_000_000_000 != 0


def test_host_without_kubeadm_files_has_nothing_to_collect(tmp_path: Path) -> None:
    write(tmp_path / "etc/hostname", "worker\n")
    write(tmp_path / "var/lib/etcd/member/snap/db", b"\0" * 512)
    assert collect(tmp_path) == []
    out = io.BytesIO()
    assert capture(tmp_path, out) == []
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        assert tar.getnames() == []


def test_encryption_config_elsewhere_is_captured_with_what_its_symlink_points_to(node: KubeadmNode) -> None:
    write(
        node.host("/etc/kubernetes/manifests/kube-apiserver.yaml"),
        APISERVER_YAML.format(ip=node.ip).replace("/etc/kubernetes/enc", "/srv/keys"),
    )
    write(node.host("/srv/keys/enc-v2.yaml"), "kind: EncryptionConfiguration\n", 0o600)
    os.symlink("enc-v2.yaml", node.host("/srv/keys/enc.yaml"))
    entries = {entry.path: entry for entry in collect(node.root)}
    assert entries["/srv/keys/enc.yaml"].kind == "symlink"
    assert entries["/srv/keys/enc.yaml"].link_target == "enc-v2.yaml"
    assert entries["/srv/keys/enc-v2.yaml"].kind == "file"
    assert "/etc/kubernetes/enc/enc.yaml" not in entries


def test_encryption_config_named_but_missing_fails_the_capture(node: KubeadmNode) -> None:
    node.host("/etc/kubernetes/enc/enc.yaml").unlink()
    with pytest.raises(OperationFailed, match="/etc/kubernetes/enc/enc.yaml.*does not exist"):
        collect(node.root)


def test_symlink_loops_in_the_pki_tree_end(node: KubeadmNode) -> None:
    os.symlink("loop-b", node.host("/etc/kubernetes/pki/loop-a"))
    os.symlink("loop-a", node.host("/etc/kubernetes/pki/loop-b"))
    paths = {entry.path for entry in collect(node.root)}
    assert {"/etc/kubernetes/pki/loop-a", "/etc/kubernetes/pki/loop-b"} <= paths


@pytest.fixture
def world_readable_node() -> Iterator[KubeadmNode]:
    """A node that user nobody can read, except ``pki/ca.key`` (pytest's tmp dirs are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="lifeboat-kube-"))
    try:
        node = make_kubeadm_node(base / "node")
        for directory, _, _ in os.walk(base):
            Path(directory).chmod(0o755)
        for name in node.expected_files() - {"/etc/kubernetes/pki/ca.key"}:
            node.host(name).chmod(0o644)
        yield node
    finally:
        shutil.rmtree(base)


def test_dangling_and_directory_symlinks_are_kept_as_links_only(node: KubeadmNode) -> None:
    os.symlink("/etc/kubernetes/pki/gone.crt", node.host("/etc/kubernetes/pki/dangling.crt"))
    os.symlink("/var/lib/etcd", node.host("/etc/kubernetes/pki/etcd-data"))
    entries = {entry.path: entry for entry in collect(node.root)}
    assert set(entries) == node.expected_files() | {
        "/etc/kubernetes/pki/dangling.crt", "/etc/kubernetes/pki/etcd-data"
    }
    assert entries["/etc/kubernetes/pki/etcd-data"].kind == "symlink"
    assert entries["/etc/kubernetes/pki/dangling.crt"].link_target == "/etc/kubernetes/pki/gone.crt"


def test_unreadable_file_fails_naming_its_path(world_readable_node: KubeadmNode) -> None:
    # Root reads any file: the capture runs as user nobody for the file checks (the effective
    # ids only, so root takes them back after; no fork of this multi-threaded process).
    as_root = os.geteuid() == 0
    if as_root:
        os.setegid(65534)
        os.seteuid(65534)
    try:
        with pytest.raises(OperationFailed) as raised:
            collect(world_readable_node.root)
    finally:
        if as_root:
            os.seteuid(0)
            os.setegid(0)
    assert str(raised.value).startswith("cannot read control-plane file /etc/kubernetes/pki/ca.key"), raised.value


def test_stock_tar_lists_host_paths_modes_owners_and_symlinks(node: KubeadmNode, tmp_path: Path) -> None:
    os.symlink("ca.crt", node.host("/etc/kubernetes/pki/current-ca.crt"))
    data, entries = archive_of(node)
    archive = write(tmp_path / "cp.tar", data)
    listing = subprocess.run(
        [str(tool("tar", "GNU tar")), "--numeric-owner", "-tvf", str(archive)],
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()
    assert len(listing) == len(entries) == len(node.expected_files()) + 1
    by_name = {line.split()[5]: line.split() for line in listing}
    uid, gid = os.getuid(), os.getgid()
    assert by_name["etc/kubernetes/pki/ca.key"][:2] == ["-rw-------", f"{uid}/{gid}"]
    assert by_name["etc/kubernetes/pki/ca.crt"][:2] == ["-rw-r--r--", f"{uid}/{gid}"]
    assert by_name["etc/kubernetes/pki/current-ca.crt"][0].startswith("l")
    assert by_name["etc/kubernetes/pki/current-ca.crt"][-2:] == ["->", "ca.crt"]
    assert all(not name.startswith("/") for name in by_name)


def test_stock_tar_extraction_restores_content_modes_owners_and_mtimes(node: KubeadmNode, tmp_path: Path) -> None:
    data, entries = archive_of(node)
    archive = write(tmp_path / "cp.tar", data)
    dest = tmp_path / "restored"
    dest.mkdir()
    subprocess.run([str(tool("tar", "GNU tar")), "-xpf", str(archive), "-C", str(dest)], check=True)
    for entry in entries:
        original, restored = os.lstat(node.host(entry.path)), os.lstat(dest / entry.path.lstrip("/"))
        assert stat.S_IMODE(restored.st_mode) == stat.S_IMODE(original.st_mode), entry.path
        assert restored.st_mtime_ns == original.st_mtime_ns, entry.path
        assert (restored.st_uid, restored.st_gid) == (original.st_uid, original.st_gid), entry.path
        assert hashlib.sha256((dest / entry.path.lstrip("/")).read_bytes()).hexdigest() == entry.sha256


def test_capture_reads_each_file_once_and_agrees_with_collect(node: KubeadmNode) -> None:
    data, captured = archive_of(node)
    assert captured == collect(node.root)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.pax_headers == {} and tar.format == tarfile.PAX_FORMAT
        for member in tar.getmembers():
            content = tar.extractfile(member)
            assert content is not None
            entry = next(e for e in captured if e.path == "/" + member.name)
            assert hashlib.sha256(content.read()).hexdigest() == entry.sha256
            assert member.uname == entry.owner and member.gname == entry.group


class TamperingStream(io.BytesIO):
    """An archive sink that does something to a host file once enough bytes went through."""

    def __init__(self, after: int, action: object) -> None:
        super().__init__()
        self.after, self.action, self.done = after, action, False

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if not self.done and self.tell() >= self.after:
            self.done = True
            assert callable(self.action)
            self.action()
        return super().write(data)


def big_node(node: KubeadmNode) -> Path:
    return write(node.host(BIG), os.urandom(4 << 20), 0o644)


def test_file_vanishing_mid_capture_fails_clearly(node: KubeadmNode) -> None:
    big = big_node(node)
    with pytest.raises(OperationFailed, match=f"{BIG} vanished while being captured"):
        capture(node.root, TamperingStream(1 << 20, big.unlink))


def test_file_growing_mid_capture_fails_clearly(node: KubeadmNode) -> None:
    big = big_node(node)

    def grow() -> None:
        with big.open("ab") as file:
            file.write(b"more")

    with pytest.raises(OperationFailed, match=f"{BIG} changed while being read"):
        capture(node.root, TamperingStream(1 << 20, grow))


def test_file_shrinking_mid_capture_fails_clearly(node: KubeadmNode) -> None:
    big = big_node(node)
    with pytest.raises(OperationFailed, match=f"{BIG} changed while being read"):
        capture(node.root, TamperingStream(1 << 20, lambda: os.truncate(big, 1 << 20)))


def test_file_changed_or_removed_after_collect_is_not_archived_silently(node: KubeadmNode) -> None:
    entries = collect(node.root)
    write(node.host("/etc/kubernetes/admin.conf"), "rotated\n", 0o600)
    with pytest.raises(OperationFailed, match="admin.conf changed since it was collected"):
        write_archive(entries, node.root, io.BytesIO())
    node.host("/etc/kubernetes/admin.conf").unlink()
    with pytest.raises(OperationFailed, match="admin.conf vanished"):
        write_archive(entries, node.root, io.BytesIO())


def test_verify_accepts_the_archive_it_was_written_with(node: KubeadmNode) -> None:
    entries = collect(node.root)
    out = io.BytesIO()
    assert write_archive(entries, node.root, out) == entries
    verify_archive(io.BytesIO(out.getvalue()), entries)


def test_verify_rejects_a_changed_byte(node: KubeadmNode) -> None:
    data, entries = archive_of(node)
    secret = b"-----fake sa.key-----"
    assert data.count(secret) == 1
    tampered = data.replace(secret, b"-----fake sa.kez-----")
    with pytest.raises(IntegrityError, match="/etc/kubernetes/pki/sa.key differs.*sha256"):
        verify_archive(io.BytesIO(tampered), entries)


def test_verify_rejects_missing_and_extra_members(node: KubeadmNode) -> None:
    data, entries = archive_of(node)
    with pytest.raises(IntegrityError, match="holds /etc/kubernetes/admin.conf but is not in the manifest"):
        verify_archive(io.BytesIO(data), [e for e in entries if e.path != "/etc/kubernetes/admin.conf"])
    ghost = CapturedFile("/etc/kubernetes/ghost.conf", "file", 0o600, 0, 0, "", "", 0, 0, "0" * 64)
    with pytest.raises(IntegrityError, match="lacks 1 file.*ghost.conf"):
        verify_archive(io.BytesIO(data), [*entries, ghost])


def test_verify_rejects_a_truncated_archive(node: KubeadmNode) -> None:
    data, entries = archive_of(node)
    with pytest.raises(IntegrityError):
        verify_archive(io.BytesIO(data[: len(data) // 2]), entries)


def test_extract_round_trip_keeps_content_modes_mtimes_and_symlinks(node: KubeadmNode, tmp_path: Path) -> None:
    os.symlink("/etc/kubernetes/pki/ca.crt", node.host("/etc/kubernetes/pki/current-ca.crt"))
    data, entries = archive_of(node)
    dest = tmp_path / "restored"
    assert sorted(extract_archive(io.BytesIO(data), dest)) == [e.path for e in entries]
    assert os.readlink(dest / "etc/kubernetes/pki/current-ca.crt") == "/etc/kubernetes/pki/ca.crt"
    assert collect(dest) == collect(node.root)


def test_extract_replaces_existing_files_but_not_through_symlinks(node: KubeadmNode, tmp_path: Path) -> None:
    data, _ = archive_of(node)
    dest = tmp_path / "restored"
    outside = write(tmp_path / "outside.txt", "untouched")
    write(dest / "etc/kubernetes/admin.conf", "stale", 0o644)
    os.makedirs(dest / "etc/kubernetes/pki")
    os.symlink(outside, dest / "etc/kubernetes/pki/ca.key")
    extract_archive(io.BytesIO(data), dest)
    assert (dest / "etc/kubernetes/admin.conf").read_bytes() == node.host("/etc/kubernetes/admin.conf").read_bytes()
    assert not (dest / "etc/kubernetes/pki/ca.key").is_symlink()
    assert outside.read_text() == "untouched"


def evil_archive(*members: tuple[str, bytes | str]) -> BinaryIO:
    """A tar whose members are (name, content) files or (name, "->target") symlinks."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content.removeprefix("->")
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    out.seek(0)
    return out


@pytest.mark.parametrize(
    "members",
    [
        [("../escape.txt", b"x")],
        [("etc/../../escape.txt", b"x")],
        [("/etc/escape.txt", b"x")],
        [("etc", "->" + "/"), ("etc/escape.txt", b"x")],
    ],
    ids=["dotdot", "inner-dotdot", "absolute", "through-symlink"],
)
def test_extraction_refuses_paths_that_leave_the_destination(
    tmp_path: Path, members: list[tuple[str, bytes | str]]
) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError, match="refusing it"):
        extract_archive(evil_archive(*members), dest)
    assert not (tmp_path / "escape.txt").exists()
    assert not Path("/etc/escape.txt").exists()


def test_a_directory_or_dangling_symlink_is_captured_as_a_link_with_a_note_naming_what_is_not(
        node: KubeadmNode, caplog: pytest.LogCaptureFixture) -> None:
    outside = node.root / "srv/etcd-pki"
    outside.mkdir(parents=True)
    (outside / "server.key").write_text("key")
    os.symlink("/srv/etcd-pki", node.host("/etc/kubernetes/pki/etcd-moved"))
    os.symlink("/etc/kubernetes/pki/gone.crt", node.host("/etc/kubernetes/pki/dangling.crt"))
    with caplog.at_level("WARNING"):
        _archive, entries = archive_of(node)
    assert "/srv/etcd-pki/server.key" not in {entry.path for entry in entries}
    notes = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("/etc/kubernetes/pki/etcd-moved points to /srv/etcd-pki, which is a directory" in note
               and "not the files in it" in note for note in notes), notes
    assert any("/etc/kubernetes/pki/dangling.crt points to /etc/kubernetes/pki/gone.crt, which is nothing" in note
               for note in notes), notes


def test_fifos_sockets_and_devices_in_the_captured_trees_are_skipped_with_a_note(
        node: KubeadmNode, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    os.mkfifo(node.host("/etc/kubernetes/pki/front-proxy.crt.fifo"))
    os.mkfifo(node.host("/etc/kubernetes/manifests/kube-controller-manager.yaml"))
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(node.host("/etc/kubernetes/pki/s.sock")))
        with caplog.at_level("WARNING"):
            _archive, entries = archive_of(node)
    finally:
        sock.close()
    assert {entry.path for entry in entries} == node.expected_files()
    notes = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "/etc/kubernetes/pki/front-proxy.crt.fifo is a FIFO, not a regular file: not captured" in notes
    assert "/etc/kubernetes/manifests/kube-controller-manager.yaml is a FIFO" in notes
    assert "/etc/kubernetes/pki/s.sock is a socket" in notes


def test_a_private_key_every_user_can_read_is_captured_with_a_note(
        node: KubeadmNode, caplog: pytest.LogCaptureFixture) -> None:
    node.host("/etc/kubernetes/pki/etcd/peer.key").chmod(0o644)
    node.host("/etc/kubernetes/admin.conf").chmod(0o604)
    node.host("/etc/kubernetes/pki/ca.crt").chmod(0o644)
    with caplog.at_level("WARNING"):
        _archive, entries = archive_of(node)
    assert {entry.path for entry in entries} == node.expected_files()
    noted = {r.args[0] for r in caplog.records if r.levelname == "WARNING" and "private key" in r.getMessage()}
    assert noted == {"/etc/kubernetes/pki/etcd/peer.key", "/etc/kubernetes/admin.conf"}


def test_a_file_or_symlink_whose_name_is_not_utf8_is_left_out_with_a_note_and_the_manifest_reads_back(
        node: KubeadmNode, caplog: pytest.LogCaptureFixture) -> None:
    pki = os.fsencode(node.host("/etc/kubernetes/pki"))
    with open(pki + b"/caf\xe9.crt", "wb") as latin1:
        latin1.write(b"cert")
    os.symlink(b"/etc/kubernetes/pki/ca\xff.crt", pki + b"/link.crt")
    os.symlink(b"ca.crt", pki + b"/link\xfe.crt")
    with caplog.at_level("WARNING"):
        _archive, entries = archive_of(node)
    assert {entry.path for entry in entries} == node.expected_files()
    notes = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "/etc/kubernetes/pki/caf\\xe9.crt: its name is not UTF-8" in notes
    assert "/etc/kubernetes/pki/link.crt: its target is not UTF-8" in notes
    assert "/etc/kubernetes/pki/link\\xfe.crt: its name is not UTF-8" in notes
    manifest = Manifest(
        id="20261204T000000Z-abcdef", cluster="c", status=BackupStatus.COMPLETE,
        started_at="2026-12-04T00:00:00Z", finished_at="2026-12-04T00:00:01Z", tool_version="t",
        source=SOURCE, snapshot=snapshot_info(), compression="zstd:1", encryption=None, recipients=(),
        objects=(stored_object(), stored_object("control-plane.tar.zst")), files=tuple(entries),
    )
    assert Manifest.from_json(manifest.to_json(), "here").files == tuple(entries)


def test_a_file_replaced_by_a_fifo_just_before_it_is_opened_fails_instead_of_hanging(
        node: KubeadmNode, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the check that a path is a regular file and its open, it may become a FIFO:
    opening that for reading waited for a writer that never comes, and the backup hung."""
    path = node.host("/etc/kubernetes/pki/ca.crt")
    regular = os.lstat(path)
    path.unlink()
    os.mkfifo(path)
    real_lstat = os.lstat
    checked: list[str] = []

    def lstat_before_the_swap(p: object, *args: object, **kwargs: object) -> os.stat_result:
        if str(p) == str(path) and not checked:
            checked.append(str(p))
            return regular  # what the check saw, a moment before the swap
        return real_lstat(p, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("lifeboat.catalog.file_archive.os.lstat", lstat_before_the_swap)
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            archive_files(node.root, ["/etc/kubernetes/pki/ca.crt"], io.BytesIO())
            result.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():
        with open(path, "wb"):  # a writer: lets the stuck open return, so the thread ends
            pass
        worker.join(10)
        pytest.fail("capturing a file that became a FIFO hung in open()")
    assert isinstance(result[0], OperationFailed) and "/etc/kubernetes/pki/ca.crt" in str(result[0])


def test_a_file_far_larger_than_any_control_plane_file_is_captured_with_a_note(
        node: KubeadmNode, caplog: pytest.LogCaptureFixture) -> None:
    large = 16 << 20  # a CA bundle of every public root is under 1 MiB
    with open(node.host("/etc/kubernetes/pki/core.dump"), "wb") as dump:
        dump.truncate(large + 1)  # sparse: no disk taken
    with caplog.at_level("WARNING"):
        _archive, entries = archive_of(node)
    assert "/etc/kubernetes/pki/core.dump" in {entry.path for entry in entries}
    noted = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert noted == [f"control-plane file /etc/kubernetes/pki/core.dump is {large >> 20} MiB, far more than a "
                     "certificate, key, kubeconfig or manifest takes: captured, but every backup stores it; if it "
                     "does not belong there, move it out of the tree"]


@pytest.mark.parametrize("kind", ["directory", "FIFO"])
def test_encryption_config_named_as_a_directory_or_fifo_fails_saying_so_not_that_it_changed(
        node: KubeadmNode, kind: str) -> None:
    """It said "changed (it is no longer a regular file); run the backup again": every run failed so."""
    target = "/etc/kubernetes/enc" if kind == "directory" else "/etc/kubernetes/enc/pipe"
    if kind == "FIFO":
        os.mkfifo(node.host(target))
    manifest = node.host("/etc/kubernetes/manifests/kube-apiserver.yaml")
    manifest.write_text(manifest.read_text().replace("/etc/kubernetes/enc/enc.yaml", target))
    with pytest.raises(OperationFailed) as raised:
        archive_of(node)
    assert str(raised.value) == (f"kube-apiserver's --encryption-provider-config names {target}, which is a {kind},"
                                 " not a file; fix the manifest before backing up")


@pytest.mark.parametrize("directory", ["/etc/kubernetes/pki", "/etc/kubernetes/manifests"])
@pytest.mark.parametrize("how", ["absolute", "relative to a directory the root lacks"])
def test_a_captured_directory_that_is_a_symlink_out_of_the_root_fails_naming_it(
        node: KubeadmNode, directory: str, how: str) -> None:
    """/etc/kubernetes/pki -> /data/pki on the host, captured in a container with --root /host: the
    kernel followed the link outside the root, found nothing, and the backup succeeded without
    a single certificate or key, without a word."""
    moved = node.host("/data" + directory)
    moved.parent.mkdir(parents=True)
    node.host(directory).rename(moved)
    if how == "absolute":
        os.symlink(f"/data{directory}", node.host(directory))
    else:
        shutil.rmtree(moved)  # the container mounts /etc/kubernetes only
        os.symlink(f"../../data{directory}", node.host(directory))
    with pytest.raises(OperationFailed) as raised:
        collect(node.root)
    assert str(raised.value).startswith(
        f"{directory} is a symlink to /data{directory}, which lifeboat cannot follow under root {node.root}")


def test_a_captured_directory_that_is_a_relative_symlink_inside_the_root_is_captured_through_it(
        node: KubeadmNode) -> None:
    moved = node.host("/data/etc/kubernetes/pki")
    moved.parent.mkdir(parents=True)
    node.host("/etc/kubernetes/pki").rename(moved)
    os.symlink("../../data/etc/kubernetes/pki", node.host("/etc/kubernetes/pki"))
    assert {entry.path for entry in collect(node.root)} == node.expected_files()

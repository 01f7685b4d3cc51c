"""`lifeboat backup`, `list`, `show`, `verify`, `delete`, `snapshot` against real etcd and S3."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest

from lifeboat.etcd import ConnectionSettings, EtcdClient, TlsConfig
from lifeboat.store import open_store
from lifeboat.store.local import LocalStore
from tests.support.binaries import EtcdRelease, tool
from tests.support.cli import Cli
from tests.support.etcd import EtcdCluster, EtcdMember
from tests.support.etcd_load import load_keys
from tests.support.kubeadm_node import install_etcd_client_files, make_kubeadm_node
from tests.support.pki import Pki

pytestmark = pytest.mark.integration


def kube_like_keys(count: int) -> Iterator[tuple[bytes, bytes]]:
    kinds = ("pods", "configmaps", "secrets", "services/specs", "serviceaccounts")
    for i in range(count):
        kind = kinds[i % len(kinds)]
        yield f"/registry/{kind}/ns-{i % 7}/obj-{i:05d}".encode(), b"k8s\x00" + bytes([i % 251]) * (200 + i % 900)


def tls_flags(member: EtcdMember, pki: Pki) -> list[str]:
    return [f"--endpoints={member.client_url}", f"--cacert={pki.ca}",
            f"--cert={pki.client.cert}", f"--key={pki.client.key}"]


def client_for(member: EtcdMember, pki: Pki | None) -> EtcdClient:
    tls = TlsConfig(pki.ca, pki.client.cert, pki.client.key) if pki else None
    return EtcdClient(ConnectionSettings((member.client_url,), tls))


@pytest.fixture(scope="module")
def etcd35(release35: EtcdRelease, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdMember]:
    with EtcdCluster(release35, tmp_path_factory.mktemp("etcd35"), pki=pki) as cluster:
        member = cluster.first()
        with client_for(member, pki) as client:
            load_keys(client, kube_like_keys(3000))
            client.delete_range(b"/registry/pods/ns-0/obj-00000")
        yield member


@pytest.fixture
def age_key(tmp_path: Path) -> tuple[Path, str]:
    identity = pyrage.x25519.Identity.generate()
    path = tmp_path / "age-key.txt"
    path.write_text(f"{identity}\n")
    path.chmod(0o600)
    return path, str(identity.to_public())


def etcdutl_status(release: EtcdRelease, snapshot: Path) -> dict[str, int]:
    assert release.etcdutl is not None
    out = subprocess.run([release.etcdutl, "snapshot", "status", snapshot, "-w", "json"],
                         capture_output=True, check=True)
    return dict(json.loads(out.stdout))


def test_backup_lists_shows_and_verifies_with_etcdutl_numbers(
    cli: Cli, etcd35: EtcdMember, pki: Pki, tmp_path: Path, release35: EtcdRelease
) -> None:
    repo = f"file://{tmp_path / 'repo'}"
    manifest = cli.json("backup", *tls_flags(etcd35, pki), "--repo", repo, "--cluster", "prod", "--no-files")
    assert isinstance(manifest, dict)
    [room] = manifest.pop("disk")  # what the backup said it needed before it started
    assert room["need_bytes"] > manifest["snapshot"]["total_size"] and room["free_bytes"] >= room["need_bytes"]
    listed = cli.json("list", "--repo", repo)
    assert [b["id"] for b in listed] == [manifest["id"]]  # type: ignore[union-attr]
    shown = cli.json("show", "latest", "--repo", repo)
    assert shown == manifest

    saved = tmp_path / "verified.db"
    report = cli.json("verify", manifest["id"], "--repo", repo, "--save-snapshot", str(saved))
    assert report["ok"] is True  # type: ignore[index]
    oracle = etcdutl_status(release35, saved)
    snap = manifest["snapshot"]
    assert (snap["hash"], snap["revision"], snap["total_key"], snap["total_size"]) == (
        oracle["hash"], oracle["revision"], oracle["totalKey"], oracle["totalSize"])
    assert manifest["source"]["etcd_version"] == "3.5.1"
    assert manifest["objects"][0]["name"] == "snapshot.db.zst"


def test_encrypted_s3_backup_opens_with_stock_age_zstd_and_restores_with_etcdutl(
    cli: Cli, etcd35: EtcdMember, pki: Pki, tmp_path: Path, release35: EtcdRelease,
    s3_repo: str, age_key: tuple[Path, str],
) -> None:
    key, public = age_key
    manifest = cli.json("backup", *tls_flags(etcd35, pki), "--repo", s3_repo,
                        "--encrypt-to", public, "--no-files")
    assert isinstance(manifest, dict) and manifest["encryption"] == "age"
    assert manifest["recipients"] == [public]
    code, out, err = cli("verify", "latest", "--repo", s3_repo, "--identity", str(key))
    assert code == 0, err
    assert "verified" in out

    obj = manifest["objects"][0]
    stored = tmp_path / obj["name"]
    store = open_store(s3_repo)
    stored.write_bytes(store.get_bytes(f"clusters/default/backups/{manifest['id']}/{obj['name']}"))
    age, zstd = tool("age", "Debian age"), tool("zstd", "Debian zstd")
    raw = tmp_path / "snapshot.db"
    subprocess.run(f"'{age}' -d -i '{key}' '{stored}' | '{zstd}' -d -q -o '{raw}'", shell=True, check=True)

    assert release35.etcdutl is not None
    restored = EtcdMember(release35, "m0", tmp_path / "restored")
    subprocess.run([release35.etcdutl, "snapshot", "restore", raw, "--data-dir", restored.data_dir,
                    "--name", "m0", "--initial-cluster", f"m0={restored.peer_url}",
                    "--initial-advertise-peer-urls", restored.peer_url],
                   capture_output=True, check=True)
    restored.start(f"m0={restored.peer_url}", "restored")
    try:
        restored.wait_healthy()
        value = restored.etcdctl("get", "/registry/secrets/ns-2/obj-00002", "--print-value-only")
        assert value.startswith("k8s")
        deleted = json.loads(restored.etcdctl("get", "/registry/pods/ns-0/obj-00000", "-w", "json"))
        assert "kvs" not in deleted
    finally:
        restored.stop()


def test_verify_encrypted_backup_needs_the_right_identity(
    cli: Cli, etcd35: EtcdMember, pki: Pki, tmp_path: Path, age_key: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, public = age_key
    repo = str(tmp_path / "repo")
    assert cli("backup", *tls_flags(etcd35, pki), "--repo", repo, "--encrypt-to", public, "--no-files")[0] == 0
    code, _, err = cli("verify", "latest", "--repo", repo)
    assert code == 3 and "--identity" in err
    other = tmp_path / "other.txt"
    other.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    # A key that opens none of it is the user's to fix, as a missing one is (exit 3, not the
    # 1 of a backup that fails its checks), and nothing is downloaded again to hash it.
    streams: list[str] = []
    stream = LocalStore.get_stream
    monkeypatch.setattr(LocalStore, "get_stream", lambda store, key, *a, **kw: (
        streams.append(key), stream(store, key, *a, **kw))[1])
    code, out, err = cli("verify", "latest", "--repo", repo, "--identity", str(other))
    assert code == 3 and "verified" not in out
    assert err.count("\n") == 1 and "cannot decrypt it with the identity given" in err
    assert len(streams) == 1 and streams[0].endswith("snapshot.db.zst.age"), streams


def test_tampered_object_fails_verification(cli: Cli, etcd35: EtcdMember, pki: Pki, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    manifest = cli.json("backup", *tls_flags(etcd35, pki), "--repo", str(repo), "--no-files")
    assert isinstance(manifest, dict)
    stored = repo / "clusters/default/backups" / manifest["id"] / "snapshot.db.zst"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    code, out, err = cli("verify", manifest["id"], "--repo", str(repo))
    assert code == 1
    assert "failed verification" in err
    assert "FAILED" in out


def test_zero_flag_backup_on_a_kubeadm_node_captures_control_plane_files(
    cli: Cli, etcd35: EtcdMember, pki: Pki, tmp_path: Path
) -> None:
    node = make_kubeadm_node(tmp_path / "node")
    manifest_path = node.host("/etc/kubernetes/manifests/etcd.yaml")
    text = manifest_path.read_text().replace("https://127.0.0.1:2379", etcd35.client_url)
    manifest_path.write_text(text)
    install_etcd_client_files(node, pki.ca, pki.client.cert, pki.client.key,
                              "/etc/kubernetes/pki/etcd/healthcheck-client")
    repo = str(tmp_path / "repo")
    manifest = cli.json("backup", "--root", str(node.root), "--repo", repo)
    assert isinstance(manifest, dict)
    assert manifest["source"]["endpoint"] == etcd35.client_url
    assert {f["path"] for f in manifest["files"]} == node.expected_files()
    keys = {f["path"]: f for f in manifest["files"]}
    assert keys["/etc/kubernetes/pki/etcd/healthcheck-client.key"]["mode"] == 0o600
    assert any(o["name"] == "control-plane.tar.zst" for o in manifest["objects"])
    code, out, err = cli("verify", "latest", "--repo", repo)
    assert code == 0, err
    assert f"{len(node.expected_files())} files match" in out


def test_delete_removes_data_then_manifest(cli: Cli, etcd35: EtcdMember, pki: Pki, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    manifest = cli.json("backup", *tls_flags(etcd35, pki), "--repo", str(repo), "--no-files")
    assert isinstance(manifest, dict)
    code, _, err = cli("delete", manifest["id"], "--repo", str(repo))
    assert code == 3 and "--yes" in err
    assert cli("delete", manifest["id"], "--repo", str(repo), "--yes")[0] == 0
    assert cli.json("list", "--repo", str(repo)) == []
    assert not (repo / "clusters/default/backups" / manifest["id"]).exists()
    code, _, err = cli("show", manifest["id"], "--repo", str(repo))
    assert code == 1 and "not found" in err


def test_one_damaged_manifest_does_not_disable_the_cluster(
    cli: Cli, etcd35: EtcdMember, pki: Pki, tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    repo = f"file://{root}"
    older = cli.json("backup", *tls_flags(etcd35, pki), "--repo", repo, "--no-files")
    newer = cli.json("backup", *tls_flags(etcd35, pki), "--repo", repo, "--no-files")
    older_manifest = next(root.rglob(f"manifests/{older['id']}.json"))
    older_manifest.write_bytes(older_manifest.read_bytes()[:200])  # truncated

    listed = cli.json("list", "--repo", repo)
    assert [(b["id"], b["status"]) for b in listed] == [  # type: ignore[index]
        (newer["id"], "complete"), (older["id"], "damaged")]
    assert "not valid JSON" in listed[1]["reason"]  # type: ignore[index]
    code, out, _err = cli("list", "--repo", repo)
    assert code == 0 and "DAMAGED" in out and f"damaged: default/{older['id']}: " in out
    assert cli.json("verify", "latest", "--repo", repo)["id"] == newer["id"]  # type: ignore[index]
    assert cli.json("verify", str(newer["id"]), "--repo", repo)["ok"] is True  # type: ignore[index]
    code, _out, err = cli("verify", str(older["id"]), "--repo", repo)
    assert code == 1 and "damaged" in err and f"lifeboat delete {older['id']}" in err
    assert cli("delete", str(older["id"]), "--repo", repo, "--yes")[0] == 0
    assert not (root / "clusters/default/backups" / str(older["id"])).exists()

    newer_manifest = next(root.rglob(f"manifests/{newer['id']}.json"))
    document = json.loads(newer_manifest.read_text())
    document["snapshot"]["revision"] = "eighty"
    document["objects"][0]["size"] = -5
    newer_manifest.write_text(json.dumps(document))
    code, _out, err = cli("restore", str(newer["id"]), "--dry-run", "--repo", repo, "--supervisor", "none",
                          "--data-dir", str(tmp_path / "etcd"), "--name", "m0",
                          "--initial-cluster", "m0=https://127.0.0.1:2380")
    assert code == 1 and err.count("\n") == 1
    assert "snapshot.revision: must be an integer, got 'eighty'" in err and "objects[0].size" in err


def test_backup_from_etcd_34_matches_its_own_snapshot_status(
    cli: Cli, release34: EtcdRelease, pki: Pki, tmp_path: Path
) -> None:
    with EtcdCluster(release34, tmp_path / "etcd34", pki=pki) as cluster:
        member = cluster.first()
        with client_for(member, pki) as client:
            load_keys(client, kube_like_keys(500))
        repo = str(tmp_path / "repo")
        manifest = cli.json("backup", *tls_flags(member, pki), "--repo", repo, "--no-files")
    assert isinstance(manifest, dict)
    assert manifest["source"]["etcd_version"].startswith("3.4.")
    saved = tmp_path / "v34.db"
    assert cli("verify", "latest", "--repo", repo, "--save-snapshot", str(saved))[0] == 0
    oracle = json.loads(subprocess.run(
        [release34.etcdctl, "snapshot", "status", saved, "-w", "json"],
        capture_output=True, check=True, env={"ETCDCTL_API": "3"}).stdout)
    snap = manifest["snapshot"]
    assert (snap["hash"], snap["revision"], snap["total_key"], snap["total_size"]) == (
        oracle["hash"], oracle["revision"], oracle["totalKey"], oracle["totalSize"])


def test_snapshot_save_writes_an_etcdutl_compatible_file(
    cli: Cli, etcd35: EtcdMember, pki: Pki, tmp_path: Path, release35: EtcdRelease
) -> None:
    path = tmp_path / "snap.db"
    code, out, err = cli("snapshot", "save", str(path), *tls_flags(etcd35, pki))
    assert code == 0, err
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.stat().st_size % 512 == 32
    assert not path.with_name("snap.db.part").exists()
    ours = cli.json("snapshot", "status", str(path))
    assert ours == etcdutl_status(release35, path)


class TestBadInput:
    def test_wrong_ca_is_unavailable_with_a_tls_hint(
        self, cli: Cli, etcd35: EtcdMember, pki: Pki, other_pki: Pki, tmp_path: Path
    ) -> None:
        code, out, err = cli("backup", f"--endpoints={etcd35.client_url}", f"--cacert={other_pki.ca}",
                             f"--cert={pki.client.cert}", f"--key={pki.client.key}",
                             "--repo", str(tmp_path / "repo"), "--dial-timeout", "2")
        assert code == 2, err
        assert err.count("\n") == 1 and "TLS" in err
        assert not list((tmp_path / "repo").rglob("manifests/*"))

    def test_client_cert_from_another_ca_is_refused(
        self, cli: Cli, etcd35: EtcdMember, pki: Pki, other_pki: Pki, tmp_path: Path
    ) -> None:
        code, _, err = cli("backup", f"--endpoints={etcd35.client_url}", f"--cacert={pki.ca}",
                           f"--cert={other_pki.client.cert}", f"--key={other_pki.client.key}",
                           "--repo", str(tmp_path / "repo"), "--dial-timeout", "2")
        assert code == 2, err

    def test_unreachable_endpoint_is_unavailable(self, cli: Cli, tmp_path: Path) -> None:
        from tests.support.ports import free_port
        code, _, err = cli("backup", f"--endpoints=http://127.0.0.1:{free_port()}",
                           "--repo", str(tmp_path / "repo"), "--dial-timeout", "1")
        assert code == 2 and err.count("\n") == 1

    def test_unknown_repository_scheme_is_a_usage_error(self, cli: Cli) -> None:
        code, _, err = cli("list", "--repo", "ftp://example/backups")
        assert code == 3 and "ftp" in err

    def test_missing_bucket_and_wrong_credentials_are_unavailable(
        self, cli: Cli, s3_repo: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        code, _, err = cli("list", "--repo", "s3://no-such-bucket-here/x")
        assert code == 2, err
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
        code, _, err = cli("list", "--repo", s3_repo)
        assert code == 2, err
        assert "wrong-secret-value" not in err

    def test_member_without_quorum_is_not_backed_up(
        self, cli: Cli, release35: EtcdRelease, tmp_path: Path
    ) -> None:
        with EtcdCluster(release35, tmp_path / "three", size=3) as cluster:
            survivor = cluster.members[0]
            for m in cluster.members[1:]:
                m.kill()
            repo = tmp_path / "repo"
            code, _, err = cli("backup", f"--endpoints={survivor.client_url}", "--repo", str(repo),
                               "--no-files", "--command-timeout", "3")
        assert code in (1, 2), err
        assert err.count("\n") == 1
        assert not list(repo.rglob("manifests/*"))

    def test_snapshot_status_of_a_non_snapshot_fails(self, cli: Cli, tmp_path: Path) -> None:
        junk = tmp_path / "junk.db"
        junk.write_bytes(b"not a database" * 1000)
        code, _, err = cli("snapshot", "status", str(junk))
        assert code == 1 and "junk.db" in err and err.count("\n") == 1

    def test_bad_recipient_is_a_usage_error(self, cli: Cli, tmp_path: Path) -> None:
        code, _, err = cli("backup", "--repo", str(tmp_path / "r"), "--encrypt-to", "age1bogus")
        assert code == 3 and "recipient" in err


def test_key_not_matching_the_certificate_is_a_usage_error(
    cli: Cli, etcd35: EtcdMember, pki: Pki, tmp_path: Path
) -> None:
    code, _, err = cli("backup", f"--endpoints={etcd35.client_url}", f"--cacert={pki.ca}",
                       f"--cert={pki.client.cert}", f"--key={pki.node.key}",
                       "--repo", str(tmp_path / "repo"))
    assert code == 3 and "does not belong" in err


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 20 MiB tmpfs: less than any backup, verify or drill needs (a 64 MiB margin alone)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (the unit tests cover the refusal with a fake disk)")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(small)], check=True)
    try:
        yield small
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_backup_verify_and_drill_say_their_disk_need_and_refuse_before_starting_without_it(
    cli: Cli, etcd35: EtcdMember, pki: Pki, tmp_path: Path, release35: EtcdRelease, small_disk: Path
) -> None:
    repo = str(tmp_path / "repo")
    assert cli("backup", *tls_flags(etcd35, pki), "--repo", repo, "--no-files")[0] == 0
    committed = sorted(p.name for p in (tmp_path / "repo/clusters/default/backups").iterdir())
    drill = ["--drill", "--restore-tool", str(release35.etcdutl), "--etcd-binary", str(release35.etcd)]
    for command in (["backup", *tls_flags(etcd35, pki), "--no-files"], ["verify", "latest"],
                    ["verify", "latest", *drill]):
        code, out, err = cli(*command, "--repo", repo, "--tmp-dir", str(small_disk))
        assert code == 5, err
        [said] = out.splitlines()  # before anything else
        assert " needs about " in said and f"free in {small_disk} (" in said
        assert err.startswith("lifeboat: error: ") and err.count("\n") == 1
        assert f"free in {small_disk}, which has" in err
        assert list(small_disk.iterdir()) == []
        code, out, err = cli(*command, "--repo", repo, "--tmp-dir", str(small_disk), "-o", "json")
        assert (code, out) == (5, "") and err.count("\n") == 1  # JSON: the need is in the result
    assert sorted(p.name for p in (tmp_path / "repo/clusters/default/backups").iterdir()) == committed

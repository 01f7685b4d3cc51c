"""`lifeboat k8s ls/get/diff/undelete` on a realistic keyspace in a real etcd 3.5.1."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest

from lifeboat.etcd import ConnectionSettings, EtcdClient, TlsConfig
from lifeboat.snapshot import cluster_id_from_members
from lifeboat.snapshot import read_members
from tests.support.binaries import EtcdRelease
from tests.support.cli import Cli
from tests.support.etcd import EtcdCluster, EtcdMember
from tests.support.etcd_load import load_keys
from tests.support.k8s_keyspace import Keyspace, build_keyspace, encryption_config_yaml, iter_items
from tests.support.pki import Pki
from tests.unit.kube.objects.fixtures import require_fixtures

pytestmark = pytest.mark.integration

Snapshot = dict[bytes, tuple[bytes, int, int]]  # key -> (value, create_revision, mod_revision)


def client_for(member: EtcdMember, pki: Pki) -> EtcdClient:
    return EtcdClient(ConnectionSettings((member.client_url,), TlsConfig(pki.ca, pki.client.cert, pki.client.key)))


def etcd_flags(member: EtcdMember, pki: Pki) -> list[str]:
    return [f"--endpoints={member.client_url}", f"--cacert={pki.ca}",
            f"--cert={pki.client.cert}", f"--key={pki.client.key}"]


def everything(client: EtcdClient) -> Snapshot:
    return {kv.key: (kv.value, kv.create_revision, kv.mod_revision) for kv in client.range_all(b"", prefix=True)}


@pytest.fixture(scope="module")
def keyspace() -> Keyspace:
    require_fixtures()
    return build_keyspace()


@pytest.fixture(scope="module")
def encryption_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("enc") / "encryption.yaml"
    path.write_text(encryption_config_yaml())
    return path


@pytest.fixture
def cluster(release35: EtcdRelease, pki: Pki, tmp_path: Path, keyspace: Keyspace) -> Iterator[EtcdMember]:
    """A fresh etcd holding the keyspace, per test: undelete tests change it."""
    with EtcdCluster(release35, tmp_path / "etcd", pki=pki) as etcd:
        member = etcd.first()
        with client_for(member, pki) as client:
            load_keys(client, iter_items(keyspace))
        yield member


@pytest.fixture
def backed_up(cli: Cli, cluster: EtcdMember, pki: Pki, tmp_path: Path) -> tuple[EtcdMember, list[str]]:
    """The cluster, and the repository flags of a backup of it ('latest')."""
    repo = ["--repo", f"file://{tmp_path / 'repo'}"]
    code, _out, err = cli("backup", *etcd_flags(cluster, pki), *repo, "--no-files")
    assert code == 0, err
    return cluster, repo


def test_ls_inventory_counts_each_namespace_and_resource_and_names_undecryptable_secrets(
    cli: Cli, backed_up: tuple[EtcdMember, list[str]], keyspace: Keyspace, encryption_config: Path,
) -> None:
    _cluster, repo = backed_up
    doc = cli.json("k8s", "ls", "latest", *repo)
    counts = {(s["namespace"], s["resource"]): s["count"] for s in doc["summary"]}
    assert counts[("team-a", "pods")] == 2
    assert counts[("team-a", "deployments.apps")] == 1
    assert counts[("team-b", "widgets.example.com")] == 2
    assert counts[(None, "nodes")] == 2
    assert counts[(None, "namespaces")] == 3
    assert sum(counts.values()) == doc["objects_total"] == len(keyspace.items)
    assert doc["revision"] > 0
    assert sorted(e["key"] for e in doc["errors"]) == sorted(k.decode() for k in keyspace.secret_plaintexts)
    assert all("encryption configuration" in e["error"] for e in doc["errors"])

    decrypted = cli.json("k8s", "ls", "latest", *repo, "--encryption-config", str(encryption_config))
    assert decrypted["errors"] == []
    secrets = {s["namespace"]: s for s in decrypted["summary"] if s["resource"] == "secrets"}
    assert secrets["team-a"]["encrypted"] == 1 and secrets["team-a"]["errors"] == 0


def test_ls_objects_of_a_namespace_and_kind_show_metadata_never_secret_values(
    cli: Cli, backed_up: tuple[EtcdMember, list[str]], keyspace: Keyspace, encryption_config: Path,
) -> None:
    _cluster, repo = backed_up
    doc = cli.json("k8s", "ls", "latest", *repo, "-n", "team-a", "--kind", "deploy")
    assert [(o["name"], o["uid"], o["kind"], o["encoding"]) for o in doc["objects"]] == [
        ("zz-web", "uid-team-a-deploy", "Deployment", "protobuf")]

    code, out, err = cli("k8s", "ls", "latest", *repo, "-n", "team-a", "--kind", "secret",
                         "--encryption-config", str(encryption_config))
    assert code == 0, err
    assert "db-password" in out and "aescbc:key1" in out
    secret_data = base64.b64encode(b"\x02").decode()  # the fixture Secret's data value
    assert secret_data not in out and "dataKey" not in out


def test_ls_and_diff_of_a_kind_no_source_knows_say_so_instead_of_zero_objects(
    cli: Cli, backed_up: tuple[EtcdMember, list[str]], pki: Pki,
) -> None:
    """`k8s ls --kind bogus` printed "0 objects" and exited 0, as if the kind existed and was empty."""
    cluster, repo = backed_up
    code, out, err = cli("k8s", "ls", "latest", *repo, "--kind", "bogus")
    assert code == 1 and "kind 'bogus' is no built-in resource" in err and "lifeboat k8s ls" in err, (out, err)
    code, _out, err = cli("k8s", "ls", "latest", *repo, "-n", "team-a", "--kind", "bogus", "-o", "json")
    assert code == 1 and "'bogus'" in err
    code, _out, err = cli("k8s", "diff", "latest", "live", *repo, *etcd_flags(cluster, pki), "--kind", "bogus")
    assert code == 1 and "'bogus'" in err and "live" in err
    # A built-in resource with no object, and a custom one held elsewhere (in the source), are answers.
    for kind, namespace in (("pvc", "team-a"), ("widgets", "no-such-namespace"), ("Widget", "no-such-namespace")):
        doc = cli.json("k8s", "ls", "latest", *repo, "-n", namespace, "--kind", kind)
        assert doc["objects_total"] == 0
    assert cli.json("k8s", "diff", "latest", "live", *repo, *etcd_flags(cluster, pki), "--kind", "widgets")["changes"] == []
    code, _out, err = cli("k8s", "diff", "latest", "live", *repo, *etcd_flags(cluster, pki), "--kind", "Widget")
    assert code == 3 and "give the resource instead" in err


def test_get_shows_json_objects_in_full_and_protobuf_ones_with_metadata_and_bytes(
    cli: Cli, backed_up: tuple[EtcdMember, list[str]], keyspace: Keyspace,
) -> None:
    _cluster, repo = backed_up
    widget = cli.json("k8s", "get", "latest", "widgets.example.com/widget-1", "-n", "team-b", *repo)
    assert widget["object"]["spec"] == {"size": 1}
    assert widget["object"]["metadata"]["uid"] == "uid-team-b-widget-1"

    pod = cli.json("k8s", "get", "latest", "pod/a-web-5d4f-0", "-n", "team-a", *repo)
    assert pod["metadata"]["ownerReferences"][0]["name"] == "web-5d4f"
    stored = keyspace.items[b"/registry/pods/team-a/a-web-5d4f-0"]
    assert base64.b64decode(pod["value_base64"]) == stored
    assert pod["mod_revision"] > 0 and pod["kind"] == "Pod"


def test_get_keeps_secret_data_out_unless_show_secrets(
    cli: Cli, backed_up: tuple[EtcdMember, list[str]], keyspace: Keyspace, encryption_config: Path,
) -> None:
    _cluster, repo = backed_up
    args = ["k8s", "get", "latest", "secret/db-password", "-n", "team-a", *repo,
            "--encryption-config", str(encryption_config)]
    hidden = cli.json(*args)
    assert hidden["value"].startswith("<redacted") and "value_base64" not in hidden
    assert hidden["encryption"] == "aescbc:key1" and hidden["metadata"]["name"] == "db-password"
    code, _out, err = cli(*args, "-o", "raw")
    assert code == 3 and "--show-secrets" in err
    shown = cli.json(*args, "--show-secrets")
    plain = keyspace.secret_plaintexts[b"/registry/secrets/team-a/db-password"]
    assert base64.b64decode(shown["decrypted_base64"]) == plain
    assert shown["metadata"]["annotations"] == {"annotationsKey": "annotationsValue"}


def test_get_names_a_secrets_annotations_never_their_values_in_any_format(
    cli: Cli, backed_up: tuple[EtcdMember, list[str]], encryption_config: Path,
) -> None:
    """Any annotation of a Secret may carry secret material (kubectl apply's
    last-applied-configuration holds its data): `k8s get` printed every one but that."""
    _cluster, repo = backed_up
    args = ["k8s", "get", "latest", "secret/db-password", "-n", "team-a", *repo,
            "--encryption-config", str(encryption_config)]
    for output in ("table", "json", "yaml"):
        code, out, err = cli(*args, "-o", output)
        assert code == 0, err
        assert "annotationsKey" in out and "annotationsValue" not in out, (output, out)


def test_get_rejects_a_key_outside_the_registry(cli: Cli, backed_up: tuple[EtcdMember, list[str]]) -> None:
    _cluster, repo = backed_up
    code, _out, err = cli("k8s", "get", "latest", "/other/pods/x", *repo)
    assert code == 3 and "outside /registry/" in err


def test_undelete_writes_back_exactly_the_deleted_namespace_and_touches_nothing_else(
    cli: Cli, backed_up: tuple[EtcdMember, list[str]], pki: Pki, keyspace: Keyspace,
) -> None:
    cluster, repo = backed_up
    flags = etcd_flags(cluster, pki)
    team_a = keyspace.in_namespace("team-a")
    with client_for(cluster, pki) as client:
        before = everything(client)
        for key in team_a:
            client.delete_range(key)
        recreated = b"/registry/configmaps/team-a/configmaps-0"
        client.put(recreated, b"k8s\x00recreated since")
        after_delete = everything(client)

        diff = cli.json("k8s", "diff", "latest", "live", *repo, *flags)
        removed = {c["key"].encode() for c in diff["changes"] if c["change"] == "removed"}
        assert removed == set(team_a) - {recreated}
        assert [c["key"] for c in diff["changes"] if c["change"] == "changed"] == [recreated.decode()]
        assert diff["added"] == 0

        dry = cli.json("k8s", "undelete", "--from", "latest", "-n", "team-a", *repo, *flags)
        assert everything(client) == after_delete
        assert dry["applied"] is False
        writes = [s for s in dry["steps"] if s["action"] == "write"]
        assert writes[0]["key"] == "/registry/namespaces/team-a"
        order = [s["name"] for s in writes]
        assert order.index("zz-web") < order.index("web-5d4f") < order.index("a-web-5d4f-0")
        skipped = {s["key"]: s["reason"] for s in dry["steps"] if s["action"] == "skip"}
        assert list(skipped) == [recreated.decode()] and "never overwritten" in skipped[recreated.decode()]

        applied = cli.json("k8s", "undelete", "--from", "latest", "-n", "team-a", "--apply", *repo, *flags)
        assert len(applied["written"]) == len(team_a) - 1
        now = everything(client)
        assert now[recreated][0] == b"k8s\x00recreated since"
        assert {k: v[0] for k, v in now.items()} == {
            k: (after_delete[k][0] if k == recreated else v[0]) for k, v in before.items()}
        untouched = {k for k in before if k not in team_a}
        assert all(now[k] == before[k] for k in untouched)

        again = cli.json("k8s", "undelete", "--from", "latest", "-n", "team-a", "--apply", *repo, *flags)
        assert again["written"] == [] and everything(client) == now


def test_undelete_of_selected_kind_writes_only_missing_objects_of_that_kind(
    cli: Cli, backed_up: tuple[EtcdMember, list[str]], pki: Pki, keyspace: Keyspace,
) -> None:
    cluster, repo = backed_up
    flags = etcd_flags(cluster, pki)
    with client_for(cluster, pki) as client:
        client.delete_range(b"/registry/example.com/widgets/team-b/", prefix=True)
        client.delete_range(b"/registry/configmaps/team-b/", prefix=True)
        doc = cli.json("k8s", "undelete", "--from", "latest", "-n", "team-b", "--kind", "Widget",
                       "--apply", *repo, *flags)
        assert sorted(doc["written"]) == [f"/registry/example.com/widgets/team-b/widget-{i}" for i in range(2)]
        assert client.get(b"/registry/configmaps/team-b/configmaps-0") is None
        widget = client.get(b"/registry/example.com/widgets/team-b/widget-0")
        assert widget is not None
        assert widget.value == keyspace.items[b"/registry/example.com/widgets/team-b/widget-0"]


def test_undelete_of_a_namespace_not_in_the_backup_fails(
    cli: Cli, backed_up: tuple[EtcdMember, list[str]], pki: Pki,
) -> None:
    cluster, repo = backed_up
    code, _out, err = cli("k8s", "undelete", "--from", "latest", "-n", "nope", *repo, *etcd_flags(cluster, pki))
    assert code == 1 and "'nope' is not in backup" in err


def test_undelete_refuses_a_source_from_another_cluster_unless_forced(
    cli: Cli, backed_up: tuple[EtcdMember, list[str]], pki: Pki, release35: EtcdRelease, tmp_path: Path,
) -> None:
    _cluster, repo = backed_up
    with EtcdCluster(release35, tmp_path / "other", pki=pki, token="another-cluster") as other:
        flags = etcd_flags(other.first(), pki)
        code, _out, err = cli("k8s", "undelete", "--from", "latest", "-n", "team-a", *repo, *flags)
        assert code == 1 and "refusing" in err and "--force" in err
        with client_for(other.first(), pki) as client:
            assert list(client.range_all(b"/registry/", prefix=True)) == []
        forced = cli.json("k8s", "undelete", "--from", "latest", "-n", "team-a", "--force", *repo, *flags)
        assert forced["applied"] is False and forced["steps"]


def test_snapshot_file_source_is_recognised_as_its_own_cluster(
    cli: Cli, cluster: EtcdMember, pki: Pki, tmp_path: Path,
) -> None:
    snapshot = tmp_path / "snap.db"
    cluster.etcdctl("snapshot", "save", str(snapshot))
    members, _removed = read_members(snapshot)
    with client_for(cluster, pki) as client:
        assert cluster_id_from_members(m.id for m in members) == client.member_list().cluster_id
        client.delete_range(b"/registry/jobs/team-b/jobs-1")
    doc = cli.json("k8s", "undelete", "--from", str(snapshot), "-n", "team-b", *etcd_flags(cluster, pki))
    assert [s["key"] for s in doc["steps"] if s["action"] == "write"] == ["/registry/jobs/team-b/jobs-1"]
    code, out, err = cli("k8s", "undelete", "--from", str(snapshot), "-n", "team-b", *etcd_flags(cluster, pki))
    assert code == 0, err
    assert "dry run: nothing written; 1 objects would be written" in out and "never overwritten" in out
    listed = cli.json("k8s", "ls", str(snapshot), "-n", "kube-system", "--kind", "jobs")
    assert [o["name"] for o in listed["objects"]] == ["jobs-0", "jobs-1"]


def test_undelete_does_not_write_values_the_live_kube_apiserver_could_not_decrypt(
    cli: Cli, backed_up: tuple[EtcdMember, list[str]], pki: Pki, tmp_path: Path, encryption_config: Path,
) -> None:
    """`k8s undelete --apply` wrote a Secret encrypted with a key the live kube-apiserver's
    configuration no longer holds (rotated away): an object kube-apiserver cannot read."""
    cluster, repo = backed_up
    flags = etcd_flags(cluster, pki)
    secret = b"/registry/secrets/team-a/db-password"
    rotated = tmp_path / "rotated.yaml"
    rotated.write_text(encryption_config_yaml().replace("name: key1", "name: key2").replace(
        base64.b64encode(bytes(range(32))).decode(), base64.b64encode(bytes(32)).decode()))
    with client_for(cluster, pki) as client:
        client.delete_range(secret)
        args = ["k8s", "undelete", "--from", "latest", "-n", "team-a", "--kind", "secret", *repo, *flags]
        code, out, err = cli(*args, "--apply", "--encryption-config", str(rotated))
        assert code == 0, err
        assert client.get(secret) is None
        assert "aescbc key 'key1'" in out and "could not read it back" in out and "wrote 0 objects" in out
        code, _out, err = cli(*args)
        assert code == 0 and "warning: 1 of the objects to write are encrypted at rest" in err
        doc = cli.json(*args, "--apply")  # unchecked: written, and said so
        assert doc["written"] == [secret.decode()] and client.get(secret) is not None
        (step,) = [s for s in doc["steps"] if s["key"] == secret.decode()]
        assert any("--encryption-config" in n for n in step["notes"])


def test_ls_live_lists_undecodable_objects_with_their_error_and_the_rest(
    cli: Cli, cluster: EtcdMember, pki: Pki, tmp_path: Path, keyspace: Keyspace,
) -> None:
    stored = keyspace.items[b"/registry/pods/team-a/a-web-5d4f-1"]
    wrong_key = tmp_path / "wrong.yaml"
    wrong_key.write_text(encryption_config_yaml().replace(
        base64.b64encode(bytes(range(32))).decode(), base64.b64encode(bytes(32)).decode()))
    with client_for(cluster, pki) as client:
        client.put(b"/registry/pods/team-a/a-web-5d4f-1", stored[: len(stored) // 2])
        client.put(b"/registry/pods/team-a/unknown-envelope", b"k8s\x00\x0a\x03\x0a\x01")
    flags = etcd_flags(cluster, pki)
    doc = cli.json("k8s", "ls", "live", "-n", "team-a", *flags, "--encryption-config", str(wrong_key))
    errors = {e["key"]: e["error"] for e in doc["errors"]}
    assert set(errors) == {"/registry/pods/team-a/a-web-5d4f-1", "/registry/pods/team-a/unknown-envelope",
                           "/registry/secrets/team-a/db-password"}
    assert "malformed" in errors["/registry/pods/team-a/a-web-5d4f-1"]
    assert "wrong key" in errors["/registry/secrets/team-a/db-password"]
    names = {o["name"] for o in doc["objects"]}
    assert {"a-web-5d4f-0", "zz-web", "widget-0", "team-a"} <= names
    assert doc["objects_total"] == len(keyspace.in_namespace("team-a")) + 1
    assert doc["revision"] > 0


def test_encrypted_backup_is_read_with_the_config_files_identity_and_the_flag_replaces_it(
    cli: Cli, cluster: EtcdMember, pki: Pki, tmp_path: Path, keyspace: Keyspace,
) -> None:
    # The k8s commands read only --identity: with a config naming the key they could not decrypt.
    key, other = tmp_path / "age-key.txt", tmp_path / "other-key.txt"
    identity = pyrage.x25519.Identity.generate()
    key.write_text(f"{identity}\n")
    other.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"encryption: {{recipients: ['{identity.to_public()}'], identity-files: ['{key}']}}\n")
    flags = [*etcd_flags(cluster, pki), "--repo", f"file://{tmp_path / 'repo'}", "--config", str(config)]
    backup = cli.json("backup", *flags, "--no-files")
    assert backup["encryption"] == "age"

    doc = cli.json("k8s", "ls", "latest", *flags)
    assert doc["objects_total"] == len(keyspace.items)
    pod = cli.json("k8s", "get", "latest", "pod/a-web-5d4f-0", "-n", "team-a", *flags)
    assert base64.b64decode(pod["value_base64"]) == keyspace.items[b"/registry/pods/team-a/a-web-5d4f-0"]
    with client_for(cluster, pki) as client:
        client.delete_range(b"/registry/example.com/widgets/team-b/", prefix=True)
    diff = cli.json("k8s", "diff", "latest", "live", *flags)
    assert diff["removed"] == 2 and diff["added"] == 0
    dry = cli.json("k8s", "undelete", "--from", "latest", "-n", "team-b", "--kind", "Widget", *flags)
    assert [s["name"] for s in dry["steps"] if s["action"] == "write"] == ["widget-0", "widget-1"]

    code, _out, err = cli("k8s", "ls", "latest", *flags, "--identity", str(other))
    assert code == 3 and "decrypt" in err, err  # a configuration error, as a missing identity is


def test_undelete_apply_reports_in_json_a_written_key_that_is_not_utf8(
    cli: Cli, cluster: EtcdMember, pki: Pki, tmp_path: Path,
) -> None:
    """`undelete --apply -o json` wrote every key, then failed (exit 4, no report of what it had
    written) on a key that is not UTF-8."""
    odd = b"/registry/configmaps/team-b/odd-\xff\xfe"
    with client_for(cluster, pki) as client:
        client.put(odd, b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"odd","namespace":"team-b"}}')
        snapshot = tmp_path / "snap.db"
        cluster.etcdctl("snapshot", "save", str(snapshot))
        client.delete_range(odd)
        doc = cli.json("k8s", "undelete", "--from", str(snapshot), "-n", "team-b", "--apply",
                       *etcd_flags(cluster, pki))
        assert doc["written"] == [odd.decode("utf-8", "replace")]
        written = client.get(odd)
        assert written is not None and written.value.startswith(b'{"apiVersion":"v1"')


def test_undelete_of_a_namespace_named_with_bytes_that_are_not_utf8_says_it_is_not_in_the_source(
    cli: Cli, cluster: EtcdMember, pki: Pki, tmp_path: Path,
) -> None:
    """`undelete -n $'team\\xff'` failed with UnicodeEncodeError (exit 4) building the key of the
    live Namespace object."""
    snapshot = tmp_path / "snap.db"
    cluster.etcdctl("snapshot", "save", str(snapshot))
    code, out, err = cli("k8s", "undelete", "--from", str(snapshot), "-n", "team\udcff", *etcd_flags(cluster, pki))
    assert (code, out) == (1, "") and "is not in snapshot file" in err

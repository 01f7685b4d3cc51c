"""Pure parts of the k8s commands: kinds, summaries, diff, the undelete plan, redaction."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import yaml

import pytest

from lifeboat.errors import NotFound, OperationFailed, UsageError
from lifeboat.kube.inventory import (
    ClusterIdentity, KindQuery, decode_entries, diff_keys,
    execute_plan, plan_undelete, same_cluster, summarize, summarize_keys,
)
from lifeboat.kube.inventory.undelete import UNRECOGNISED, UndeleteStep
from lifeboat.kube.objects import EncryptionConfiguration
from lifeboat.kube.inventory.views import REDACTED, object_document
from lifeboat.kube.objects import parse_registry_key
from lifeboat.snapshot import cluster_id_from_members
from tests.support.k8s_keyspace import AESCBC_KEY_NAME, AESCBC_SECRET, Owner, aescbc, build_keyspace, fixture, renamed
from tests.unit.kube.objects.fixtures import require_fixtures


@dataclass(frozen=True)
class KV:
    key: bytes
    value: bytes
    create_revision: int = 1
    mod_revision: int = 1
    lease: int = 0


def kvs(items: dict[bytes, bytes], lease_on: bytes = b"") -> list[KV]:
    return [KV(k, v, i + 1, i + 1, 7 if k == lease_on else 0) for i, (k, v) in enumerate(sorted(items.items()))]


@pytest.mark.parametrize("text, key, kind", [
    ("pods", b"/registry/pods/ns/a", ""), ("pod", b"/registry/pods/ns/a", ""),
    ("po", b"/registry/pods/ns/a", ""), ("Deployment", b"/registry/deployments/ns/a", "Deployment"),
    ("deployments.apps", b"/registry/deployments/ns/a", ""), ("svc", b"/registry/services/specs/ns/a", ""),
    ("widget", b"/registry/example.com/widgets/ns/a", "Widget"),
    ("widgets.example.com", b"/registry/example.com/widgets/ns/a", ""),
])
def test_kind_query_accepts_resources_singulars_short_names_and_kinds(text: str, key: bytes, kind: str) -> None:
    assert KindQuery.parse(text).matches(parse_registry_key(key), kind)


def test_kind_query_does_not_match_another_group_or_resource() -> None:
    assert not KindQuery.parse("deployments.extensions").matches(parse_registry_key(b"/registry/deployments/ns/a"))
    assert not KindQuery.parse("pods").matches(parse_registry_key(b"/registry/configmaps/ns/a"), "ConfigMap")


@pytest.mark.parametrize("text, built_in", [
    ("pods", True), ("Pod", True), ("po", True), ("deployments.apps", True), ("deploy", True),
    ("deployments.extensions", False), ("bogus", False), ("widgets", False), ("Widget", False),
])
def test_a_kind_query_knows_the_built_in_resources(text: str, built_in: bool) -> None:
    assert KindQuery.parse(text).built_in is built_in
    with pytest.raises(UsageError):
        KindQuery.parse("pods/web")


def test_cluster_identity_matches_by_recorded_id_derived_id_or_shared_member() -> None:
    derived = cluster_id_from_members([3, 1, 2])
    live = ClusterIdentity(derived, frozenset({1, 2, 3, 4}))
    assert same_cluster(ClusterIdentity(None, frozenset({3, 2, 1})), live)
    assert same_cluster(ClusterIdentity(None, frozenset({4, 9})), live)
    assert not same_cluster(ClusterIdentity(None, frozenset({9})), live)
    assert not same_cluster(ClusterIdentity(derived + 1, frozenset({1})), live)
    assert not same_cluster(ClusterIdentity(None), live)


def test_diff_reports_added_removed_and_changed_keys_only() -> None:
    a = [KV(b"/registry/pods/ns/a", b"1"), KV(b"/registry/pods/ns/b", b"2"), KV(b"/registry/pods/ns/c", b"3")]
    b = [KV(b"/registry/pods/ns/b", b"2", mod_revision=9), KV(b"/registry/pods/ns/c", b"x", mod_revision=8),
         KV(b"/registry/pods/ns/d", b"4", mod_revision=7)]
    changes = [(c.change, c.name, c.a_mod_revision, c.b_mod_revision) for c in diff_keys(a, b)]
    assert changes == [("removed", "a", 1, None), ("changed", "c", 1, 8), ("added", "d", None, 7)]


def test_fast_summary_agrees_with_the_decoded_one_and_names_undecryptable_values() -> None:
    require_fixtures()
    space = build_keyspace(("x", "y"))
    rows = kvs(space.items)
    fast, failed = summarize_keys(rows)
    assert fast == summarize(decode_entries(rows))
    assert sorted(e.kv.key for e in failed) == sorted(space.secret_plaintexts)


def _plan_for(space_items: dict[bytes, bytes], live: set[bytes], **kw: object) -> list[tuple[str, str, str]]:
    plan = plan_undelete(decode_entries(kvs(space_items, lease_on=b"/registry/configmaps/x/configmaps-1")),
                         live, "x", **kw)  # type: ignore[arg-type]
    return [(s.action, s.key.decode(), s.reason) for s in plan.steps]


def test_undelete_plan_puts_namespace_first_owners_before_owned_and_explains_skips() -> None:
    require_fixtures()
    space = build_keyspace(("x", "y"))
    live = {b"/registry/configmaps/x/configmaps-0"}
    steps = _plan_for(space.in_namespace("x"), live)
    keys = [k for _a, k, _r in steps]
    assert keys[0] == "/registry/namespaces/x"
    assert keys.index("/registry/deployments/x/zz-web") < keys.index("/registry/replicasets/x/web-5d4f") \
        < keys.index("/registry/pods/x/a-web-5d4f-0")
    reasons = {k: (a, r) for a, k, r in steps}
    assert reasons["/registry/configmaps/x/configmaps-0"][0] == "skip"
    assert "never overwritten" in reasons["/registry/configmaps/x/configmaps-0"][1]
    assert "lease" in reasons["/registry/configmaps/x/configmaps-1"][1]
    assert not any("/y/" in k for k in keys)


def test_undelete_plan_notes_owners_that_are_not_restored() -> None:
    require_fixtures()
    orphan = renamed(fixture("core.v1.Pod"), "p", "x", "uid-p", (Owner("apps/v1", "ReplicaSet", "gone", "uid-gone"),))
    plan = plan_undelete(decode_entries(kvs({b"/registry/pods/x/p": orphan})), set(), "x")
    (step,) = plan.steps
    assert step.action == "write" and any("ReplicaSet/gone" in n for n in step.notes)


def _config(rules: str) -> EncryptionConfiguration:
    return EncryptionConfiguration.from_document(yaml.safe_load(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n" + rules))


def _aescbc_rule(resources: str, name: str, secret: bytes) -> str:
    return (f"- resources: [{resources}]\n  providers:\n  - aescbc:\n      keys:\n"
            f"      - name: {name}\n        secret: {base64.b64encode(secret).decode()}\n  - identity: {{}}\n")


def test_undelete_skips_a_value_the_live_kube_apiserver_could_not_decrypt() -> None:
    """`k8s undelete --apply` wrote values encrypted at rest with a key the live kube-apiserver's
    encryption configuration no longer holds (rotated away, another cluster's key): objects it
    cannot read, written as if restored."""
    require_fixtures()
    key = b"/registry/secrets/x/s"
    value = aescbc(renamed(fixture("core.v1.Secret"), "s", "x", "uid-s"))

    def step(live: EncryptionConfiguration | None) -> UndeleteStep:
        plan = plan_undelete(decode_entries(kvs({key: value}), live), set(), "x", live_encryption=live)
        (only,) = plan.steps
        return only

    holds = _config(_aescbc_rule("secrets", AESCBC_KEY_NAME, AESCBC_SECRET))
    assert step(holds).action == "write" and step(holds).notes == ()
    rotated = _config(_aescbc_rule("secrets", "key2", bytes(32)))
    other_secret = _config(_aescbc_rule("secrets", AESCBC_KEY_NAME, bytes(32)))
    # kube-apiserver reads secrets with the first rule covering them only, whatever later rules hold.
    elsewhere = _config(_aescbc_rule("secrets", "key2", bytes(32)) + _aescbc_rule("configmaps", AESCBC_KEY_NAME,
                                                                                     AESCBC_SECRET))
    for live in (rotated, other_secret, elsewhere):
        skipped = step(live)
        assert skipped.action == "skip", live
        assert skipped.reason.startswith("encrypted at rest with aescbc key 'key1', which the encryption "
                                         "configuration's rule for secrets does not hold: the live kube-apiserver")
    uncovered = step(_config(_aescbc_rule("configmaps", AESCBC_KEY_NAME, AESCBC_SECRET)))
    assert uncovered.action == "skip" and "no rule of the encryption configuration covers secrets" in uncovered.reason
    # Without the live configuration nothing can be checked: written, and said so on the step.
    unchecked = step(None)
    assert unchecked.action == "write" and any("pass it with --encryption-config" in n for n in unchecked.notes)


def test_undelete_plan_rejects_a_namespace_the_source_does_not_hold() -> None:
    require_fixtures()
    with pytest.raises(NotFound, match="'zzz' is not in"):
        plan_undelete(decode_entries(kvs(build_keyspace(("x",)).items)), set(), "zzz")


def test_execute_plan_reports_keys_that_appeared_after_planning() -> None:
    require_fixtures()
    space = build_keyspace(("x",))
    plan = plan_undelete(decode_entries(kvs(space.in_namespace("x"))), set(), "x")
    store: dict[bytes, bytes] = {b"/registry/pods/x/a-web-5d4f-1": b"newer"}

    def put_if_absent(key: bytes, value: bytes) -> bool:
        return store.setdefault(key, value) == value and key != b"/registry/pods/x/a-web-5d4f-1"

    result = execute_plan(plan, put_if_absent)
    assert [s.key for s in result.skipped] == [b"/registry/pods/x/a-web-5d4f-1"]
    assert store[b"/registry/pods/x/a-web-5d4f-1"] == b"newer"
    assert len(result.written) == len(plan.writes) - 1


def test_json_secret_documents_are_redacted_unless_asked() -> None:
    doc = {"apiVersion": "v1", "kind": "Secret", "data": {"password": "c2VjcmV0"},
           "metadata": {"name": "s", "namespace": "x", "uid": "u", "annotations": {
               "kubectl.kubernetes.io/last-applied-configuration": '{"data":{"password":"c2VjcmV0"}}'}}}
    (entry,) = decode_entries([KV(b"/registry/secrets/x/s", json.dumps(doc).encode())])
    hidden = json.dumps(object_document(entry))
    assert "c2VjcmV0" not in hidden and REDACTED in hidden
    assert "c2VjcmV0" in json.dumps(object_document(entry, show_secrets=True))


def test_a_json_secret_whose_values_are_not_in_a_data_object_is_still_redacted() -> None:
    """A Secret written straight into etcd with `data` as a list, `stringData` as a string and an
    extra field had all three values printed by `k8s get` (only values inside `data`/`stringData`
    objects were redacted)."""
    doc = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": "s", "namespace": "x"},
           "data": ["VALUE-ONE"], "stringData": "VALUE-TWO", "extra": {"token": "VALUE-THREE"}}
    (entry,) = decode_entries([KV(b"/registry/secrets/x/s", json.dumps(doc).encode())])
    shown = object_document(entry)["object"]
    assert "VALUE" not in json.dumps(shown)
    assert shown == {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": "s", "namespace": "x"},
                     "data": REDACTED, "stringData": REDACTED, "extra": REDACTED}
    # A field kept for what it says of the Secret keeps only a plain value.
    (entry,) = decode_entries([KV(b"/registry/secrets/x/s", json.dumps({**doc, "type": {"t": "VALUE-4"}}).encode())])
    assert object_document(entry)["object"]["type"] == REDACTED


def test_a_secrets_annotations_are_named_never_shown() -> None:
    """Any annotation of a Secret may hold secret material: `k8s get` hid only kubectl's
    last-applied-configuration, in the decoded metadata and in a JSON Secret's document."""
    doc = {"apiVersion": "v1", "kind": "Secret", "data": {"password": "c2VjcmV0"},
           "metadata": {"name": "s", "namespace": "x", "labels": {"app": "web"},
                        "annotations": {"example.com/token": "TOKEN-1"},
                        "managedFields": [{"manager": "TOKEN-2"}], "extra": "TOKEN-3"}}
    (entry,) = decode_entries([KV(b"/registry/secrets/x/s", json.dumps(doc).encode())])
    shown = object_document(entry)
    assert "TOKEN" not in json.dumps(shown)
    assert shown["metadata"]["annotations"] == {"example.com/token": REDACTED}
    assert shown["object"]["metadata"] == {"name": "s", "namespace": "x", "labels": {"app": "web"},
                                           "annotations": {"example.com/token": REDACTED},
                                           "managedFields": REDACTED, "extra": REDACTED}
    assert "TOKEN-1" in json.dumps(object_document(entry, show_secrets=True))
    require_fixtures()  # a protobuf Secret as kube-apiserver stores it: annotationsKey=annotationsValue
    (entry,) = decode_entries([KV(b"/registry/secrets/x/s", renamed(fixture("core.v1.Secret"), "s", "x", "u"))])
    assert object_document(entry)["metadata"]["annotations"] == {"annotationsKey": REDACTED}
    (entry,) = decode_entries([KV(b"/registry/configmaps/x/c", renamed(fixture("core.v1.ConfigMap"), "c", "x", "u"))])
    assert object_document(entry)["metadata"]["annotations"] == {"annotationsKey": "annotationsValue"}


TERMINATING = (b'{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x","uid":"u-x",'
               b'"deletionTimestamp":"2026-11-30T10:00:00Z"},"status":{"phase":"Terminating"}}')
CONFIGMAP = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","namespace":"x","uid":"u-c"}}'


def test_undelete_plan_refuses_to_write_back_a_namespace_that_was_being_deleted() -> None:
    """A backup taken while the namespace was terminating holds it with a deletionTimestamp:
    undelete wrote it back with only a note, and Kubernetes deleted it again with every object
    written into it, after undelete had reported them written."""
    source = {b"/registry/namespaces/x": TERMINATING, b"/registry/configmaps/x/c": CONFIGMAP}
    with pytest.raises(OperationFailed, match="'x' was already being deleted in the source .since 2026-11-30T10:00:00Z"):
        plan_undelete(decode_entries(kvs(source)), set(), "x")
    # A namespace that exists live is not written: its missing objects are.
    plan = plan_undelete(decode_entries(kvs(source)), {b"/registry/namespaces/x"}, "x")
    assert [(s.action, s.key) for s in plan.steps] == [("skip", b"/registry/namespaces/x"),
                                                       ("write", b"/registry/configmaps/x/c")]


def test_undelete_plan_reads_each_objects_uid_a_bounded_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ordering owners first rebuilt the map of every object by uid once per object: planning a
    namespace of 40,000 objects (Helm keeps each release as a Secret) took minutes, not a second."""
    from lifeboat.kube.inventory.listing import Entry

    reads = 0
    uid = Entry.uid.fget
    assert uid is not None

    def counted(self: Entry) -> str:
        nonlocal reads
        reads += 1
        return uid(self)

    source = {f"/registry/configmaps/x/c{i}".encode(): json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}", "namespace": "x", "uid": f"u{i}"}}
    ).encode() for i in range(2000)}
    entries = list(decode_entries(kvs(source)))
    monkeypatch.setattr(Entry, "uid", property(counted))
    plan = plan_undelete(entries, set(), "x")
    assert len(plan.writes) == 2000 and reads <= 10 * len(entries)


def test_undelete_plan_names_a_key_of_the_namespace_whose_layout_it_does_not_know() -> None:
    """A key with more segments than a name has (/registry/configmaps/x/a/b) was left out of the
    plan in silence (counted as a cluster-scoped configmap), not listed as skipped with why."""
    source = {b"/registry/configmaps/x/a/b": CONFIGMAP, b"/registry/configmaps/x/c": CONFIGMAP}
    plan = plan_undelete(decode_entries(kvs(source)), set(), "x")
    assert [(s.action, s.key, s.reason) for s in plan.steps] == [
        ("skip", b"/registry/configmaps/x/a/b", UNRECOGNISED),
        ("write", b"/registry/configmaps/x/c", "")]
    (summary,) = summarize_keys(kvs(source))[0]
    assert (summary.namespace, summary.resource, summary.count) == ("x", "configmaps", 2)


def test_a_secret_stored_under_another_resources_key_is_still_redacted() -> None:
    """A Secret's value copied under a ConfigMap's key (aescbc, which does not bind a value to its
    key, decrypts it there too) was shown in full by `k8s get`: redaction went by the key alone."""
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "x"},
           "data": {"password": "VALUE-ONE"}}
    (entry,) = decode_entries([KV(b"/registry/configmaps/x/s", json.dumps(doc).encode())])
    assert entry.is_secret
    assert "VALUE" not in json.dumps(object_document(entry))

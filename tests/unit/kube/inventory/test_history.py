"""Describing what changed between two stored versions of an object."""

from __future__ import annotations

import json

from lifeboat.kube.inventory.history import describe_change
from lifeboat.kube.objects.stored import decode_value
from tests.support.k8s_keyspace import MAGIC, _string, build_keyspace, encode, fixture, parse, renamed
from tests.unit.kube.objects.fixtures import require_fixtures

WIDGET = b"/registry/example.com/widgets/team-b/widget-0"



def test_json_objects_are_compared_field_by_field_ignoring_resource_version() -> None:
    before = decode_value(WIDGET, b'{"kind":"Widget","metadata":{"name":"w","resourceVersion":"1"},'
                                  b'"spec":{"size":1,"color":"red"}}')
    after = decode_value(WIDGET, b'{"kind":"Widget","metadata":{"name":"w","resourceVersion":"2"},'
                                 b'"spec":{"size":2,"shape":"round"}}')
    assert describe_change(before, after) == (
        'spec.color: removed (was "red")', 'spec.shape: added "round"', "spec.size: 1 → 2")


def test_created_and_deleted_versions() -> None:
    version = decode_value(WIDGET, b'{"kind":"Widget","metadata":{"name":"w"}}')
    assert describe_change(None, version)[0].startswith("created (")
    assert describe_change(version, None) == ("deleted",)


def test_protobuf_objects_are_compared_by_metadata_and_size() -> None:
    require_fixtures()
    keyspace = build_keyspace()
    key = b"/registry/configmaps/team-a/configmaps-0"
    stored = keyspace.items[key]
    before = decode_value(key, stored)
    after = decode_value(key, renamed(stored, "configmaps-0", "team-a", "another-uid"))
    changes = describe_change(before, after)
    assert any(c.startswith("metadata.uid:") and "another-uid" in c for c in changes)


SECRET = b"/registry/secrets/team-a/s1"


def json_secret(data: str, string_data: str, applied: str) -> bytes:
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "s1", "namespace": "team-a", "uid": "u1",
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied}},
        "data": {"password": data}, "stringData": {"x": string_data}}).encode()


def test_a_secrets_changed_values_are_named_never_shown() -> None:
    """`k8s history secret/NAME` printed every old and new value of data and stringData (its
    help says Secret values are never printed; `k8s get` redacts them)."""
    before = decode_value(SECRET, json_secret("c2VjcmV0LUE=", "plain-A", '{"data":{"password":"c2VjcmV0LUE="}}'))
    after = decode_value(SECRET, json_secret("c2VjcmV0LUI=", "plain-B", '{"data":{"password":"c2VjcmV0LUI="}}'))
    changes = describe_change(before, after)
    assert changes == ("data.password: (value not shown) → (value not shown)",
                       "metadata.annotations.kubectl.kubernetes.io/last-applied-configuration: "
                       "(value not shown) → (value not shown)",
                       "stringData.x: (value not shown) → (value not shown)")
    assert describe_change(before, before) == ("stored bytes unchanged",)
    # Another kind's fields are shown as before.
    assert "spec.size: 1 → 2" in describe_change(
        decode_value(WIDGET, b'{"kind":"Widget","metadata":{"name":"w"},"spec":{"size":1}}'),
        decode_value(WIDGET, b'{"kind":"Widget","metadata":{"name":"w"},"spec":{"size":2}}'))


def annotated(stored: bytes, key: str, value: str) -> bytes:
    """A stored protobuf object with one more annotation (ObjectMeta field 12, a map entry)."""
    envelope = parse(stored[len(MAGIC):])
    out: list[tuple[int, int, bytes]] = []
    for number, wire, body in envelope:
        if number == 2:
            fields = parse(body)
            meta = parse(fields[0][2]) + [(12, 2, encode([_string(1, key), _string(2, value)]))]
            meta.sort(key=lambda f: f[0])
            body = encode([(1, 2, encode(meta))] + fields[1:])
        out.append((number, wire, body))
    return MAGIC + encode(out)


def test_a_protobuf_secrets_applied_configuration_is_named_never_shown() -> None:
    require_fixtures()
    stored = renamed(fixture("core.v1.Secret"), "s1", "team-a", "u1")
    applied = "kubectl.kubernetes.io/last-applied-configuration"
    before = decode_value(SECRET, annotated(stored, applied, '{"data":{"password":"c2VjcmV0LUE="}}'))
    after = decode_value(SECRET, annotated(stored, applied, '{"data":{"password":"c2VjcmV0LUI="}}'))
    changes = describe_change(before, after)
    assert f"annotation {applied}: (value not shown) → (value not shown)" in changes, changes
    assert not any("c2VjcmV0" in line for line in changes)



def test_every_annotation_of_a_secret_is_named_never_shown() -> None:
    """Any annotation of a Secret may hold secret material: `k8s history` hid only kubectl's
    last-applied-configuration and printed every other one's old and new value."""
    require_fixtures()
    stored = renamed(fixture("core.v1.Secret"), "s1", "team-a", "u1")
    note = "example.com/token"
    changes = describe_change(decode_value(SECRET, annotated(stored, note, "TOKEN-A")),
                              decode_value(SECRET, annotated(stored, note, "TOKEN-B")))
    assert f"annotation {note}: (value not shown) → (value not shown)" in changes, changes
    assert not any("TOKEN" in line for line in changes)
    # Added and removed ones too; another kind's annotations are shown as before.
    added = describe_change(decode_value(SECRET, stored), decode_value(SECRET, annotated(stored, note, "TOKEN-A")))
    assert f"annotation {note}=(value not shown) added" in added, added
    configmap = renamed(fixture("core.v1.ConfigMap"), "c1", "team-a", "u1")
    key = b"/registry/configmaps/team-a/c1"
    shown = describe_change(decode_value(key, annotated(configmap, note, "a")),
                            decode_value(key, annotated(configmap, note, "b")))
    assert f'annotation {note}: "a" → "b"' in shown, shown

    def json_version(n: int) -> bytes:
        return json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {
            "name": "s1", "labels": {"v": str(n)}, "annotations": {note: f"TOKEN-{n}"},
            "extra": f"TOKEN-{n}"}}).encode()
    changes = describe_change(decode_value(SECRET, json_version(1)), decode_value(SECRET, json_version(2)))
    assert changes == (f"metadata.annotations.{note}: (value not shown) → (value not shown)",
                       "metadata.extra: (value not shown) → (value not shown)",
                       'metadata.labels.v: "1" → "2"'), changes


def test_a_secrets_values_outside_data_objects_are_named_never_shown() -> None:
    """`k8s history` of a Secret written straight into etcd with `data` as a list, `stringData` as
    a string and an extra field printed each old and new value."""
    def secret(n: int) -> bytes:
        return json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1", "labels": {"v": str(n)}},
                           "data": [f"VALUE-{n}"], "stringData": f"VALUE-{n}", "extra": {"t": f"VALUE-{n}"}}).encode()
    changes = describe_change(decode_value(SECRET, secret(1)), decode_value(SECRET, secret(2)))
    assert changes == ("data: (value not shown) → (value not shown)",
                       "extra.t: (value not shown) → (value not shown)",
                       'metadata.labels.v: "1" → "2"',
                       "stringData: (value not shown) → (value not shown)")

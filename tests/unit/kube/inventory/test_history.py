"""Describing what changed between two stored versions of an object."""

from __future__ import annotations

from lifeboat.kube.inventory.history import describe_change
from lifeboat.kube.objects.stored import decode_value
from tests.support.k8s_keyspace import build_keyspace, renamed
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

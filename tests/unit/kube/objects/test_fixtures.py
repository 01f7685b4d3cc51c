"""Every built-in type Kubernetes stores decodes to what its JSON twin says."""

from __future__ import annotations

import pytest

from lifeboat.kube.objects import decode_value
from tests.unit.kube.objects.fixtures import (
    assert_meta_matches_json,
    fixture_names,
    load,
    require_fixtures,
)

KEY = b"/registry/pods/namespaceValue/nameValue"
NAMES = fixture_names()


def test_kubernetes_fixtures_are_present() -> None:
    require_fixtures()
    assert len(NAMES) > 150


@pytest.mark.parametrize("name", NAMES)
def test_protobuf_value_decodes_like_its_json_twin(name: str) -> None:
    fixture = load(name)
    doc = fixture.document

    stored = decode_value(KEY, fixture.protobuf)

    assert stored.error is None
    assert stored.encoding == "protobuf"
    assert stored.raw == fixture.protobuf
    assert stored.api_version == doc.get("apiVersion", "")
    assert stored.kind == doc.get("kind", "")
    if "name" in doc.get("metadata", {}):
        assert stored.metadata is not None
        assert_meta_matches_json(stored.metadata, doc["metadata"])
    else:
        # Lists, Status, WatchEvent, *Options, AdmissionReview...: no ObjectMeta at field 1.
        assert stored.metadata is None


@pytest.mark.parametrize("name", NAMES)
def test_json_value_decodes_to_its_own_metadata(name: str) -> None:
    fixture = load(name)
    doc = fixture.document

    stored = decode_value(KEY, fixture.json_bytes)

    assert stored.error is None
    assert stored.encoding == "json"
    assert stored.api_version == doc.get("apiVersion", "")
    assert stored.kind == doc.get("kind", "")
    if "metadata" in doc:
        assert stored.metadata is not None
        assert_meta_matches_json(stored.metadata, doc["metadata"])
    else:
        assert stored.metadata is None


def test_fixtures_fill_every_metadata_field() -> None:
    require_fixtures()
    meta = decode_value(KEY, load("core.v1.Pod").protobuf).metadata

    assert meta is not None
    assert (meta.name, meta.namespace, meta.uid) == ("nameValue", "namespaceValue", "uidValue")
    assert meta.generation == 7
    assert meta.deletion_grace_period_seconds == 10
    assert meta.creation_timestamp is not None and meta.creation_timestamp.year == 2008
    assert meta.owner_references[0].controller is True
    assert meta.managed_fields_count == 1

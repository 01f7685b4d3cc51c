"""Kubernetes' storage fixtures (shared/k8s-fixtures/HEAD) and checks against their JSON twins."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lifeboat.kube.objects import ObjectMeta
from tests.support.binaries import in_ci

# tests/unit/kube/objects/fixtures.py -> the checkout, with shared/ beside it.
FIXTURES = Path(__file__).resolve().parents[4].parent / "shared" / "k8s-fixtures" / "HEAD"


@dataclass(frozen=True)
class Fixture:
    """One built-in type: its stored protobuf bytes and its JSON twin."""

    name: str
    protobuf: bytes
    json_bytes: bytes

    @property
    def document(self) -> dict[str, Any]:
        doc = json.loads(self.json_bytes)
        assert isinstance(doc, dict)
        return doc


def fixture_names() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.pb"))


def load(name: str) -> Fixture:
    return Fixture(
        name, (FIXTURES / f"{name}.pb").read_bytes(), (FIXTURES / f"{name}.json").read_bytes()
    )


def require_fixtures() -> None:
    """Fail in CI, skip elsewhere, when shared/k8s-fixtures is not beside the checkout."""
    if fixture_names():
        return
    message = f"Kubernetes storage fixtures not found at {FIXTURES}"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def assert_meta_matches_json(meta: ObjectMeta, expected: dict[str, Any]) -> None:
    """Compare every decoded ObjectMeta field with the JSON twin's ``metadata``."""
    assert meta.name == expected.get("name", "")
    assert meta.generate_name == expected.get("generateName", "")
    assert meta.namespace == expected.get("namespace", "")
    assert meta.self_link == expected.get("selfLink", "")
    assert meta.uid == expected.get("uid", "")
    assert meta.resource_version == expected.get("resourceVersion", "")
    assert meta.generation == expected.get("generation", 0)
    assert meta.creation_timestamp == _time(expected.get("creationTimestamp"))
    assert meta.deletion_timestamp == _time(expected.get("deletionTimestamp"))
    assert meta.deletion_grace_period_seconds == expected.get("deletionGracePeriodSeconds")
    assert dict(meta.labels) == expected.get("labels", {})
    assert dict(meta.annotations) == expected.get("annotations", {})
    owners = expected.get("ownerReferences", [])
    assert len(meta.owner_references) == len(owners)
    for got, want in zip(meta.owner_references, owners, strict=True):
        assert got.api_version == want.get("apiVersion", "")
        assert got.kind == want.get("kind", "")
        assert got.name == want.get("name", "")
        assert got.uid == want.get("uid", "")
        assert got.controller == want.get("controller")
        assert got.block_owner_deletion == want.get("blockOwnerDeletion")
    assert list(meta.finalizers) == expected.get("finalizers", [])
    assert meta.managed_fields_count == len(expected.get("managedFields", []))

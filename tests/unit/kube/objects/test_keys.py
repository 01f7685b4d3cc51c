"""Registry keys name group, resource, namespace and name, historical layouts included."""

from __future__ import annotations

import pytest

from lifeboat.kube.objects import ResourceKey, parse_registry_key


@pytest.mark.parametrize(
    ("key", "group", "resource", "namespace", "name"),
    [
        ("/registry/pods/default/web-0", "", "pods", "default", "web-0"),
        ("/registry/secrets/kube-system/token", "", "secrets", "kube-system", "token"),
        ("/registry/configmaps/ns/cm", "", "configmaps", "ns", "cm"),
        ("/registry/serviceaccounts/ns/default", "", "serviceaccounts", "ns", "default"),
        ("/registry/services/specs/default/kubernetes", "", "services", "default", "kubernetes"),
        (
            "/registry/services/endpoints/default/kubernetes",
            "",
            "endpoints",
            "default",
            "kubernetes",
        ),
        ("/registry/controllers/ns/rc", "", "replicationcontrollers", "ns", "rc"),
        ("/registry/events/ns/pod.17a", "", "events", "ns", "pod.17a"),
        ("/registry/namespaces/kube-system", "", "namespaces", None, "kube-system"),
        ("/registry/minions/node-1", "", "nodes", None, "node-1"),
        ("/registry/persistentvolumes/pv-1", "", "persistentvolumes", None, "pv-1"),
        ("/registry/masterleases/10.0.0.1", "", "masterleases", None, "10.0.0.1"),
        ("/registry/ranges/serviceips", "", "ranges", None, "serviceips"),
        ("/registry/deployments/ns/web", "apps", "deployments", "ns", "web"),
        ("/registry/replicasets/ns/web-5d8", "apps", "replicasets", "ns", "web-5d8"),
        (
            "/registry/leases/kube-node-lease/node-1",
            "coordination.k8s.io",
            "leases",
            "kube-node-lease",
            "node-1",
        ),
        ("/registry/ingress/ns/web", "networking.k8s.io", "ingresses", "ns", "web"),
        (
            "/registry/clusterroles/admin",
            "rbac.authorization.k8s.io",
            "clusterroles",
            None,
            "admin",
        ),
        (
            "/registry/clusterrolebindings/admin",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            None,
            "admin",
        ),
        ("/registry/rolebindings/ns/rb", "rbac.authorization.k8s.io", "rolebindings", "ns", "rb"),
        (
            "/registry/priorityclasses/system-node-critical",
            "scheduling.k8s.io",
            "priorityclasses",
            None,
            "system-node-critical",
        ),
        (
            "/registry/flowschemas/exempt",
            "flowcontrol.apiserver.k8s.io",
            "flowschemas",
            None,
            "exempt",
        ),
        (
            "/registry/podsecuritypolicy/restricted",
            "policy",
            "podsecuritypolicies",
            None,
            "restricted",
        ),
        (
            "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
            "widgets.example.com",
        ),
        (
            "/registry/apiregistration.k8s.io/apiservices/v1.apps",
            "apiregistration.k8s.io",
            "apiservices",
            None,
            "v1.apps",
        ),
        ("/registry/example.com/widgets/ns/w1", "example.com", "widgets", "ns", "w1"),
        ("/registry/example.com/clusterwidgets/w1", "example.com", "clusterwidgets", None, "w1"),
    ],
)
def test_known_layouts_are_parsed(
    key: str, group: str, resource: str, namespace: str | None, name: str
) -> None:
    parsed = parse_registry_key(key.encode())

    assert parsed == ResourceKey(group, resource, namespace, name, key.encode(), recognised=True)


@pytest.mark.parametrize(
    "key",
    [
        "/registry/namespaces/ns/extra",  # cluster-scoped resource with a namespace segment
        "/registry/pods/only-a-name",  # namespaced resource without one
        "/registry/pods/ns/name/extra",
        "/registry/pods//name",
        "/registry/services/specs/default",
        "/registry/apiextensions.k8s.io/customresourcedefinitions/ns/name",
        "/registry/",
    ],
)
def test_unknown_layouts_keep_the_raw_key(key: str) -> None:
    parsed = parse_registry_key(key.encode())

    assert parsed is not None
    assert parsed.raw == key.encode()
    assert parsed.recognised is False


def test_unheard_of_resource_is_guessed_from_its_segments() -> None:
    assert parse_registry_key(b"/registry/gizmos/ns/g") == ResourceKey(
        "", "gizmos", "ns", "g", b"/registry/gizmos/ns/g", recognised=False
    )
    assert parse_registry_key(b"/registry/gizmos/g") == ResourceKey(
        "", "gizmos", None, "g", b"/registry/gizmos/g", recognised=False
    )


@pytest.mark.parametrize(
    "key",
    [b"/other/pods/ns/name", b"/registryx/pods/ns/name", b"/registry", b"registry/pods/a/b", b""],
)
def test_keys_outside_the_prefix_are_none(key: bytes) -> None:
    assert parse_registry_key(key) is None


def test_custom_prefix_is_honoured() -> None:
    parsed = parse_registry_key(b"/k8s-prod/pods/ns/p", prefix=b"/k8s-prod/")

    assert parsed is not None and (parsed.resource, parsed.namespace, parsed.name) == (
        "pods",
        "ns",
        "p",
    )
    assert parse_registry_key(b"/registry/pods/ns/p", prefix=b"/k8s-prod") is None


def test_key_that_is_not_utf8_is_kept() -> None:
    parsed = parse_registry_key(b"/registry/pods/ns/\xff\xfe")

    assert parsed is not None and parsed.raw == b"/registry/pods/ns/\xff\xfe"

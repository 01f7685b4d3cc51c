"""Where the API server keeps each resource in etcd: parsing registry keys."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = b"/registry"

# First key segment under the prefix -> (API group, resource, namespaced), for the
# built-in resources. The API server stores built-in resources under their plural
# resource name without the group, except for these historical names:
# services/specs, services/endpoints, controllers (replicationcontrollers), minions
# (nodes), ingress (ingresses), podsecuritypolicy, masterleases and ranges.
_BUILTIN: dict[str, tuple[str, str, bool]] = {
    # core
    "pods": ("", "pods", True),
    "configmaps": ("", "configmaps", True),
    "secrets": ("", "secrets", True),
    "serviceaccounts": ("", "serviceaccounts", True),
    "limitranges": ("", "limitranges", True),
    "resourcequotas": ("", "resourcequotas", True),
    "persistentvolumeclaims": ("", "persistentvolumeclaims", True),
    "podtemplates": ("", "podtemplates", True),
    "controllers": ("", "replicationcontrollers", True),
    "events": ("", "events", True),
    "namespaces": ("", "namespaces", False),
    "minions": ("", "nodes", False),
    "persistentvolumes": ("", "persistentvolumes", False),
    "masterleases": ("", "masterleases", False),
    "ranges": ("", "ranges", False),
    # apps, batch, autoscaling, policy
    "deployments": ("apps", "deployments", True),
    "replicasets": ("apps", "replicasets", True),
    "daemonsets": ("apps", "daemonsets", True),
    "statefulsets": ("apps", "statefulsets", True),
    "controllerrevisions": ("apps", "controllerrevisions", True),
    "jobs": ("batch", "jobs", True),
    "cronjobs": ("batch", "cronjobs", True),
    "horizontalpodautoscalers": ("autoscaling", "horizontalpodautoscalers", True),
    "poddisruptionbudgets": ("policy", "poddisruptionbudgets", True),
    "podsecuritypolicy": ("policy", "podsecuritypolicies", False),
    # *.k8s.io groups
    "leases": ("coordination.k8s.io", "leases", True),
    "leasecandidates": ("coordination.k8s.io", "leasecandidates", True),
    "endpointslices": ("discovery.k8s.io", "endpointslices", True),
    "ingress": ("networking.k8s.io", "ingresses", True),
    "networkpolicies": ("networking.k8s.io", "networkpolicies", True),
    "ingressclasses": ("networking.k8s.io", "ingressclasses", False),
    "ipaddresses": ("networking.k8s.io", "ipaddresses", False),
    "servicecidrs": ("networking.k8s.io", "servicecidrs", False),
    "roles": ("rbac.authorization.k8s.io", "roles", True),
    "rolebindings": ("rbac.authorization.k8s.io", "rolebindings", True),
    "clusterroles": ("rbac.authorization.k8s.io", "clusterroles", False),
    "clusterrolebindings": ("rbac.authorization.k8s.io", "clusterrolebindings", False),
    "priorityclasses": ("scheduling.k8s.io", "priorityclasses", False),
    "storageclasses": ("storage.k8s.io", "storageclasses", False),
    "volumeattachments": ("storage.k8s.io", "volumeattachments", False),
    "csidrivers": ("storage.k8s.io", "csidrivers", False),
    "csinodes": ("storage.k8s.io", "csinodes", False),
    "volumeattributesclasses": ("storage.k8s.io", "volumeattributesclasses", False),
    "csistoragecapacities": ("storage.k8s.io", "csistoragecapacities", True),
    "certificatesigningrequests": ("certificates.k8s.io", "certificatesigningrequests", False),
    "clustertrustbundles": ("certificates.k8s.io", "clustertrustbundles", False),
    "podcertificaterequests": ("certificates.k8s.io", "podcertificaterequests", True),
    "mutatingwebhookconfigurations": (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        False,
    ),
    "validatingwebhookconfigurations": (
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        False,
    ),
    "validatingadmissionpolicies": (
        "admissionregistration.k8s.io",
        "validatingadmissionpolicies",
        False,
    ),
    "validatingadmissionpolicybindings": (
        "admissionregistration.k8s.io",
        "validatingadmissionpolicybindings",
        False,
    ),
    "mutatingadmissionpolicies": (
        "admissionregistration.k8s.io",
        "mutatingadmissionpolicies",
        False,
    ),
    "mutatingadmissionpolicybindings": (
        "admissionregistration.k8s.io",
        "mutatingadmissionpolicybindings",
        False,
    ),
    "flowschemas": ("flowcontrol.apiserver.k8s.io", "flowschemas", False),
    "prioritylevelconfigurations": (
        "flowcontrol.apiserver.k8s.io",
        "prioritylevelconfigurations",
        False,
    ),
    "runtimeclasses": ("node.k8s.io", "runtimeclasses", False),
    "resourceclaims": ("resource.k8s.io", "resourceclaims", True),
    "resourceclaimtemplates": ("resource.k8s.io", "resourceclaimtemplates", True),
    "resourceslices": ("resource.k8s.io", "resourceslices", False),
    "deviceclasses": ("resource.k8s.io", "deviceclasses", False),
    "devicetaintrules": ("resource.k8s.io", "devicetaintrules", False),
    "storageversions": ("internal.apiserver.k8s.io", "storageversions", False),
    "storageversionmigrations": ("storagemigration.k8s.io", "storageversionmigrations", False),
}

# Under services/ the core group keeps two resources: services/specs and services/endpoints.
_SERVICES_SUBTREES = {"specs": "services", "endpoints": "endpoints"}

# Group-qualified paths (/registry/<group>/<resource>/...) are used by custom resources
# and by the two API servers that extend kube-apiserver; these are cluster-scoped.
_GROUP_QUALIFIED_CLUSTER_SCOPED = frozenset(
    {
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        ("apiregistration.k8s.io", "apiservices"),
    }
)


@dataclass(frozen=True)
class ResourceKey:
    """What an etcd key under the registry prefix names.

    ``recognised`` is False when the key does not follow a layout this module knows
    (then ``resource`` is the first segment and ``name`` the rest of the key) or names a
    resource it has never heard of (then namespace/name are guessed from the segments).
    ``raw`` is always the key as stored.
    """

    group: str
    resource: str
    namespace: str | None
    name: str
    raw: bytes
    recognised: bool = True


def parse_registry_key(key: bytes, prefix: bytes = DEFAULT_PREFIX) -> ResourceKey | None:
    """Split an etcd key into group, resource, namespace and name; None outside ``prefix``."""
    base = prefix.rstrip(b"/") + b"/"
    if not key.startswith(base):
        return None
    parts = key[len(base) :].decode("utf-8", "replace").split("/")
    first = parts[0]
    namespaced: bool | None
    if first == "services" and len(parts) > 1 and parts[1] in _SERVICES_SUBTREES:
        group, resource, namespaced, rest = "", _SERVICES_SUBTREES[parts[1]], True, parts[2:]
    elif first in _BUILTIN:
        group, resource, namespaced = _BUILTIN[first]
        rest = parts[1:]
    elif "." in first and len(parts) > 1:
        group, resource, rest = first, parts[1], parts[2:]
        namespaced = False if (group, resource) in _GROUP_QUALIFIED_CLUSTER_SCOPED else None
    else:
        return _guess(key, parts)
    if "" in rest or "" in (first, resource):
        return _unknown(key, parts)
    if len(rest) == 2 and namespaced is not False:
        return ResourceKey(group, resource, rest[0], rest[1], key)
    if len(rest) == 1 and namespaced is not True:
        return ResourceKey(group, resource, None, rest[0], key)
    if len(rest) > 2 and namespaced is not False:
        # More segments than a name has (a name cannot hold '/'): not a layout the API server
        # writes, but its namespace is plain, so the namespace's commands see (and skip) it.
        return ResourceKey(group, resource, rest[0], "/".join(rest[1:]), key, recognised=False)
    return _unknown(key, parts)


def _guess(key: bytes, parts: list[str]) -> ResourceKey:
    if "" not in parts and len(parts) in (2, 3):
        namespace = parts[1] if len(parts) == 3 else None
        return ResourceKey("", parts[0], namespace, parts[-1], key, recognised=False)
    return _unknown(key, parts)


def _unknown(key: bytes, parts: list[str]) -> ResourceKey:
    return ResourceKey("", parts[0], None, "/".join(parts[1:]), key, recognised=False)

"""What a user may type for a kind: ``pods``, ``pod``, ``po``, ``Pod``, ``deployments.apps``."""

from __future__ import annotations

from dataclasses import dataclass

from lifeboat.errors import UsageError
from lifeboat.kube.objects import ResourceKey

# Singular and short names kubectl accepts for built-in resources (kubectl api-resources),
# mapped to (group, resource). Kinds stored in the objects themselves also match, so custom
# resources work by their kind or plural without being listed here.
_ALIASES: dict[str, tuple[str, str]] = {
    "pod": ("", "pods"), "po": ("", "pods"),
    "configmap": ("", "configmaps"), "cm": ("", "configmaps"),
    "secret": ("", "secrets"),
    "serviceaccount": ("", "serviceaccounts"), "sa": ("", "serviceaccounts"),
    "service": ("", "services"), "svc": ("", "services"),
    "endpoint": ("", "endpoints"), "ep": ("", "endpoints"),
    "namespace": ("", "namespaces"), "ns": ("", "namespaces"),
    "node": ("", "nodes"), "no": ("", "nodes"),
    "persistentvolume": ("", "persistentvolumes"), "pv": ("", "persistentvolumes"),
    "persistentvolumeclaim": ("", "persistentvolumeclaims"),
    "pvc": ("", "persistentvolumeclaims"),
    "limitrange": ("", "limitranges"), "limits": ("", "limitranges"),
    "resourcequota": ("", "resourcequotas"), "quota": ("", "resourcequotas"),
    "replicationcontroller": ("", "replicationcontrollers"),
    "rc": ("", "replicationcontrollers"),
    "event": ("", "events"), "ev": ("", "events"),
    "podtemplate": ("", "podtemplates"),
    "deployment": ("apps", "deployments"), "deploy": ("apps", "deployments"),
    "replicaset": ("apps", "replicasets"), "rs": ("apps", "replicasets"),
    "daemonset": ("apps", "daemonsets"), "ds": ("apps", "daemonsets"),
    "statefulset": ("apps", "statefulsets"), "sts": ("apps", "statefulsets"),
    "controllerrevision": ("apps", "controllerrevisions"),
    "job": ("batch", "jobs"),
    "cronjob": ("batch", "cronjobs"), "cj": ("batch", "cronjobs"),
    "horizontalpodautoscaler": ("autoscaling", "horizontalpodautoscalers"),
    "hpa": ("autoscaling", "horizontalpodautoscalers"),
    "poddisruptionbudget": ("policy", "poddisruptionbudgets"),
    "pdb": ("policy", "poddisruptionbudgets"),
    "lease": ("coordination.k8s.io", "leases"),
    "endpointslice": ("discovery.k8s.io", "endpointslices"),
    "ingress": ("networking.k8s.io", "ingresses"), "ing": ("networking.k8s.io", "ingresses"),
    "networkpolicy": ("networking.k8s.io", "networkpolicies"),
    "netpol": ("networking.k8s.io", "networkpolicies"),
    "role": ("rbac.authorization.k8s.io", "roles"),
    "rolebinding": ("rbac.authorization.k8s.io", "rolebindings"),
    "clusterrole": ("rbac.authorization.k8s.io", "clusterroles"),
    "clusterrolebinding": ("rbac.authorization.k8s.io", "clusterrolebindings"),
    "storageclass": ("storage.k8s.io", "storageclasses"), "sc": ("storage.k8s.io", "storageclasses"),
    "priorityclass": ("scheduling.k8s.io", "priorityclasses"),
    "pc": ("scheduling.k8s.io", "priorityclasses"),
    "customresourcedefinition": ("apiextensions.k8s.io", "customresourcedefinitions"),
    "crd": ("apiextensions.k8s.io", "customresourcedefinitions"),
    "crds": ("apiextensions.k8s.io", "customresourcedefinitions"),
    "apiservice": ("apiregistration.k8s.io", "apiservices"),
}


def resource_label(resource: ResourceKey) -> str:
    """``pods``, ``deployments.apps``: the resource as kubectl names it."""
    return f"{resource.resource}.{resource.group}" if resource.group else resource.resource


@dataclass(frozen=True)
class KindQuery:
    """A parsed ``--kind`` or the KIND of ``KIND/NAME``; case-insensitive."""

    text: str
    name: str
    group: str | None

    @classmethod
    def parse(cls, text: str) -> KindQuery:
        cleaned = text.strip().lower()
        if not cleaned or "/" in cleaned:
            raise UsageError(f"kind {text!r}: expected a resource or kind such as pods, "
                             "deployments.apps or Deployment")
        if cleaned in _ALIASES:
            group, resource = _ALIASES[cleaned]
            return cls(text, resource, group)
        name, _, group = cleaned.partition(".")
        if group and name in _ALIASES and _ALIASES[name][0] == group:
            return cls(text, _ALIASES[name][1], group)
        return cls(text, name, group or None)

    def matches(self, resource: ResourceKey | None, kind: str = "") -> bool:
        """Whether a key's resource, or the kind stored in its object, is the one asked for."""
        if resource is not None and resource.resource.lower() == self.name:
            return self.group is None or resource.group == self.group
        if kind and kind.lower() == self.name:
            return self.group is None or (resource is not None and resource.group == self.group)
        return False

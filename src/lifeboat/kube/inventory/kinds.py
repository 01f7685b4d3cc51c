"""What a user may type for a kind: ``pods``, ``pod``, ``po``, ``Pod``, ``deployments.apps``."""

from __future__ import annotations

from dataclasses import dataclass

from lifeboat.errors import UsageError
from lifeboat.kube.objects import ResourceKey

# Singular and short names kubectl accepts for built-in resources (kubectl api-resources):
# one resource a line, ``resource[.group]`` then its names. Kinds stored in the objects
# themselves also match, so custom resources work by their kind or plural without being listed.
_BUILT_IN_NAMES = """
pods                                                pod po
configmaps                                          configmap cm
secrets                                             secret
serviceaccounts                                     serviceaccount sa
services                                            service svc
endpoints                                           endpoint ep
namespaces                                          namespace ns
nodes                                               node no
persistentvolumes                                   persistentvolume pv
persistentvolumeclaims                              persistentvolumeclaim pvc
limitranges                                         limitrange limits
resourcequotas                                      resourcequota quota
replicationcontrollers                              replicationcontroller rc
events                                              event ev
podtemplates                                        podtemplate
deployments.apps                                    deployment deploy
replicasets.apps                                    replicaset rs
daemonsets.apps                                     daemonset ds
statefulsets.apps                                   statefulset sts
controllerrevisions.apps                            controllerrevision
jobs.batch                                          job
cronjobs.batch                                      cronjob cj
horizontalpodautoscalers.autoscaling                horizontalpodautoscaler hpa
poddisruptionbudgets.policy                         poddisruptionbudget pdb
leases.coordination.k8s.io                          lease
endpointslices.discovery.k8s.io                     endpointslice
ingresses.networking.k8s.io                         ingress ing
networkpolicies.networking.k8s.io                   networkpolicy netpol
roles.rbac.authorization.k8s.io                     role
rolebindings.rbac.authorization.k8s.io              rolebinding
clusterroles.rbac.authorization.k8s.io              clusterrole
clusterrolebindings.rbac.authorization.k8s.io       clusterrolebinding
storageclasses.storage.k8s.io                       storageclass sc
priorityclasses.scheduling.k8s.io                   priorityclass pc
customresourcedefinitions.apiextensions.k8s.io      customresourcedefinition crd crds
apiservices.apiregistration.k8s.io                  apiservice
"""


def _by_name(table: str) -> dict[str, tuple[str, str]]:
    """Each name of the table mapped to its resource's (group, resource)."""
    aliases: dict[str, tuple[str, str]] = {}
    for line in table.strip().splitlines():
        label, *names = line.split()
        resource, _, group = label.partition(".")
        aliases.update((name, (group, resource)) for name in names)
    return aliases


_ALIASES = _by_name(_BUILT_IN_NAMES)
_BUILT_IN = frozenset(_ALIASES.values())


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

    @property
    def built_in(self) -> bool:
        """Whether this names a resource every cluster knows (then no object of it is no mistake)."""
        return any(resource == self.name and self.group in (None, group) for group, resource in _BUILT_IN)

    def matches(self, resource: ResourceKey | None, kind: str = "") -> bool:
        """Whether a key's resource, or the kind stored in its object, is the one asked for."""
        if resource is not None and resource.resource.lower() == self.name:
            return self.group is None or resource.group == self.group
        if kind and kind.lower() == self.name:
            return self.group is None or (resource is not None and resource.group == self.group)
        return False

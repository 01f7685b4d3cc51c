"""Reading Kubernetes objects out of a snapshot, a backup or a live etcd: list, diff, undelete.

Sources (:mod:`.source`) give key-sorted etcd keys; :mod:`.listing` decodes and
summarises them, :mod:`.diff` compares two sources, :mod:`.undelete` plans and writes
a namespace back. Everything but the sources and :func:`execute_plan` is pure.
"""

from lifeboat.kube.inventory.diff import Change, diff_keys, filter_changes
from lifeboat.kube.inventory.kinds import KindQuery, resource_label
from lifeboat.kube.inventory.listing import (
    Entry,
    ResourceSummary,
    decode_entries,
    holds_kind,
    select,
    keys_in_namespace,
    summarize,
    summarize_keys,
)
from lifeboat.kube.inventory.source import (
    REGISTRY_PREFIX,
    ClusterIdentity,
    LiveEtcdSource,
    ObjectSource,
    SnapshotFileSource,
    StoredKeyValue,
    same_cluster,
)
from lifeboat.kube.inventory.undelete import (
    UndeletePlan,
    UndeleteResult,
    UndeleteStep,
    execute_plan,
    plan_undelete,
)

__all__ = [
    "REGISTRY_PREFIX", "Change", "ClusterIdentity", "Entry", "KindQuery", "LiveEtcdSource",
    "ObjectSource", "ResourceSummary", "SnapshotFileSource", "StoredKeyValue",
    "UndeletePlan", "UndeleteResult", "UndeleteStep", "decode_entries",
    "diff_keys", "execute_plan", "filter_changes", "holds_kind", "plan_undelete", "resource_label",
    "keys_in_namespace", "same_cluster", "select", "summarize", "summarize_keys",
]

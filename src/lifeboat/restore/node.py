"""This node's etcd as the restore sees it: the static pod (also while held stopped) and the live member."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lifeboat.errors import UsageError
from lifeboat.etcd import ConnectionSettings, EtcdClient, KeyValue
from lifeboat.kube.paths import APISERVER_MANIFEST, on_host
from lifeboat.kube.static_pods import EtcdDiscovery, etcd_endpoint_from_manifest, read_static_pod
from lifeboat.restore.supervisor import HOLDING_DIR


def discover_etcd(root: Path) -> EtcdDiscovery | None:
    """The etcd static pod's settings, read from its usual place or, mid-restore, the holding dir."""
    return (etcd_endpoint_from_manifest(root)
            or etcd_endpoint_from_manifest(root, manifest=f"{HOLDING_DIR}/etcd.yaml"))


def apiserver_port(root: Path) -> int | None:
    """kube-apiserver's ``--secure-port`` from its static pod, held or not (6443 is its default)."""
    for manifest in (APISERVER_MANIFEST, f"{HOLDING_DIR}/kube-apiserver.yaml"):
        pod = read_static_pod(on_host(root, manifest), container="kube-apiserver")
        if pod is None:
            continue
        port = pod.flags.value("secure-port") or "6443"
        try:
            return int(port)
        except ValueError:
            raise UsageError(f"kube-apiserver's --secure-port {port!r} in {manifest} is not a number") from None
    return None


class EtcdMemberProbe:
    """Reads from the restored member through lifeboat's etcd client."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings

    def revision(self) -> int:
        with EtcdClient(self.settings) as client:
            return client.range(b"\0", limit=1, keys_only=True).revision

    def get(self, key: bytes) -> KeyValue | None:
        with EtcdClient(self.settings) as client:
            return client.get(key)

    def get_many(self, keys: Sequence[bytes]) -> list[KeyValue | None]:
        with EtcdClient(self.settings) as client:
            return [client.get(key) for key in keys]

    def cluster_id(self) -> int:
        """The cluster id the member reports about itself (Maintenance.Status needs no quorum)."""
        with EtcdClient(self.settings) as client:
            return client.status(self.settings.endpoints[0]).cluster_id

    def watch_refused_as_compacted(self, revision: int) -> bool:
        with EtcdClient(self.settings) as client:
            return client.refuses_watch_from(revision)

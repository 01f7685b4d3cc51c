"""This node's etcd as the restore sees it: the static pod (also while held stopped) and the live member."""

from __future__ import annotations

import tempfile
from pathlib import Path

from lifeboat.errors import UsageError
from lifeboat.etcd import ConnectionSettings, EtcdClient, KeyValue
from lifeboat.kube.paths import APISERVER_MANIFEST, ETCD_MANIFEST, on_host
from lifeboat.kube.static_pods import EtcdDiscovery, etcd_endpoint_from_manifest, read_static_pod
from lifeboat.restore.supervisor import HOLDING_DIR


def discover_etcd(root: Path) -> EtcdDiscovery | None:
    """The etcd static pod's settings, read from its usual place or, mid-restore, the holding dir.

    kube's discovery reads ``/etc/kubernetes/manifests/etcd.yaml`` only; while a restore holds
    etcd stopped the manifest sits in :data:`HOLDING_DIR`. Reading it means pointing
    discovery at a view of the node where the held file is at the usual path.
    """
    found = etcd_endpoint_from_manifest(root)
    if found is not None:
        return found
    held = on_host(root, f"{HOLDING_DIR}/etcd.yaml")
    if not held.exists():
        return None
    return _discover_held(root, held)


def _discover_held(root: Path, held: Path) -> EtcdDiscovery:
    # A throwaway root whose manifests dir holds only a link to the held manifest; every
    # other path discovery reads (PKI, client certs) is mapped back to the real root below.
    with tempfile.TemporaryDirectory(prefix="lifeboat-held-") as view:
        link = on_host(Path(view), ETCD_MANIFEST)
        link.parent.mkdir(parents=True)
        link.symlink_to(held)
        pki = on_host(Path(view), "/etc/kubernetes/pki")
        pki.symlink_to(on_host(root, "/etc/kubernetes/pki"))
        seen = etcd_endpoint_from_manifest(Path(view))
        if seen is None:
            raise UsageError(f"cannot read the held etcd manifest {held}")

        def back(path: Path | None) -> Path | None:
            return None if path is None else root / path.relative_to(view)

        return EtcdDiscovery(
            manifest=held, endpoints=seen.endpoints, ca=back(seen.ca), cert=back(seen.cert),
            key=back(seen.key), name=seen.name, data_dir=back(seen.data_dir),
            advertise_client_urls=seen.advertise_client_urls,
            initial_advertise_peer_urls=seen.initial_advertise_peer_urls,
            initial_cluster=seen.initial_cluster, initial_cluster_token=seen.initial_cluster_token,
            initial_cluster_state=seen.initial_cluster_state, image=seen.image, version=seen.version,
        )


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

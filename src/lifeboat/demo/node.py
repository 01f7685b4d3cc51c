"""The demo's kubeadm-like control-plane node: the files kubeadm would write, under a root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lifeboat.demo.pki import Pki

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
    - --name=demo-0
    - --data-dir={data_dir}
    - --advertise-client-urls={client_url}
    - --listen-client-urls={client_url}
    - --initial-advertise-peer-urls={peer_url}
    - --initial-cluster=demo-0={peer_url}
    - --cert-file=/etc/kubernetes/pki/etcd/server.crt
    - --key-file=/etc/kubernetes/pki/etcd/server.key
    - --trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt
    - --client-cert-auth=true
    volumeMounts:
    - {{mountPath: /etc/kubernetes/pki/etcd, name: etcd-certs}}
  volumes:
  - {{hostPath: {{path: /etc/kubernetes/pki/etcd, type: DirectoryOrCreate}}, name: etcd-certs}}
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


def _write(path: Path, text: str | bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    os.chmod(path, mode)


def make_node(root: Path, pki: Pki, client_url: str, peer_url: str, data_dir: Path) -> Path:
    """Write the node's /etc/kubernetes and /var/lib/kubelet under ``root``; returns ``root``."""
    etc = root / "etc/kubernetes"
    pki_dir = etc / "pki/etcd"
    pki_dir.mkdir(parents=True, exist_ok=True)
    for source, name in ((pki.ca, "ca.crt"), (pki.node.cert, "server.crt"), (pki.node.key, "server.key"),
                         (pki.client.cert, "healthcheck-client.crt"), (pki.client.key, "healthcheck-client.key")):
        shutil.copyfile(source, pki_dir / name)
        os.chmod(pki_dir / name, 0o600 if name.endswith(".key") else 0o644)
    shutil.copyfile(pki.ca, etc / "pki/ca.crt")
    manifests = etc / "manifests"
    _write(manifests / "etcd.yaml", ETCD_MANIFEST.format(
        client_url=client_url, peer_url=peer_url, data_dir=data_dir.resolve()), 0o600)
    _write(manifests / "kube-apiserver.yaml", APISERVER_MANIFEST.format(client_url=client_url), 0o600)
    _write(etc / "enc/encryption.yaml", ENCRYPTION_CONFIG, 0o600)
    for conf in ("admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf"):
        _write(etc / conf, KUBECONFIG % (conf, conf), 0o600)
    _write(root / "var/lib/kubelet/config.yaml",
           "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n", 0o644)
    return root

"""A fake kubeadm control-plane node under a directory: manifests, PKI, kubeconfigs, kubelet config.

The static-pod manifests are written the way kubeadm (v1.28-v1.30) writes them: flags sorted,
``--flag=value`` form, host paths mounted at the same container paths.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

ETCD_YAML = """\
apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/etcd.advertise-client-urls: {advertise}
  creationTimestamp: null
  labels:
    component: etcd
    tier: control-plane
  name: etcd
  namespace: kube-system
spec:
  containers:
  - command:
    - etcd
    - --advertise-client-urls={advertise}
    - --cert-file=/etc/kubernetes/pki/etcd/server.crt
    - --client-cert-auth=true
    - --data-dir=/var/lib/etcd
    - --experimental-initial-corrupt-check=true
    - --experimental-watch-progress-notify-interval=5s
    - --initial-advertise-peer-urls={peer}
    - --initial-cluster={name}={peer}
    - --key-file=/etc/kubernetes/pki/etcd/server.key
    - --listen-client-urls={listen}
    - --listen-metrics-urls=http://127.0.0.1:2381
    - --listen-peer-urls={peer}
    - --name={name}
    - --peer-cert-file=/etc/kubernetes/pki/etcd/peer.crt
    - --peer-client-cert-auth=true
    - --peer-key-file=/etc/kubernetes/pki/etcd/peer.key
    - --peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt
    - --snapshot-count=10000
    - --trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt
    image: {image}
    imagePullPolicy: IfNotPresent
    livenessProbe:
      failureThreshold: 8
      httpGet:
        host: 127.0.0.1
        path: /health?exclude=NOSPACE&serializable=true
        port: 2381
        scheme: HTTP
      initialDelaySeconds: 10
      periodSeconds: 10
      timeoutSeconds: 15
    name: etcd
    resources:
      requests:
        cpu: 100m
        memory: 100Mi
    volumeMounts:
    - mountPath: /var/lib/etcd
      name: etcd-data
    - mountPath: /etc/kubernetes/pki/etcd
      name: etcd-certs
  hostNetwork: true
  priority: 2000001000
  priorityClassName: system-node-critical
  securityContext:
    seccompProfile:
      type: RuntimeDefault
  volumes:
  - hostPath:
      path: /etc/kubernetes/pki/etcd
      type: DirectoryOrCreate
    name: etcd-certs
  - hostPath:
      path: /var/lib/etcd
      type: DirectoryOrCreate
    name: etcd-data
status: {{}}
"""

APISERVER_YAML = """\
apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: {ip}:6443
  creationTimestamp: null
  labels:
    component: kube-apiserver
    tier: control-plane
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address={ip}
    - --allow-privileged=true
    - --authorization-mode=Node,RBAC
    - --client-ca-file=/etc/kubernetes/pki/ca.crt
    - --enable-admission-plugins=NodeRestriction
    - --enable-bootstrap-token-auth=true
    - --encryption-provider-config=/etc/kubernetes/enc/enc.yaml
    - --etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt
    - --etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.crt
    - --etcd-keyfile=/etc/kubernetes/pki/apiserver-etcd-client.key
    - --etcd-servers=https://127.0.0.1:2379
    - --kubelet-client-certificate=/etc/kubernetes/pki/apiserver-kubelet-client.crt
    - --kubelet-client-key=/etc/kubernetes/pki/apiserver-kubelet-client.key
    - --kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname
    - --proxy-client-cert-file=/etc/kubernetes/pki/front-proxy-client.crt
    - --proxy-client-key-file=/etc/kubernetes/pki/front-proxy-client.key
    - --requestheader-allowed-names=front-proxy-client
    - --requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt
    - --requestheader-extra-headers-prefix=X-Remote-Extra-
    - --requestheader-group-headers=X-Remote-Group
    - --requestheader-username-headers=X-Remote-User
    - --secure-port=6443
    - --service-account-issuer=https://kubernetes.default.svc.cluster.local
    - --service-account-key-file=/etc/kubernetes/pki/sa.pub
    - --service-account-signing-key-file=/etc/kubernetes/pki/sa.key
    - --service-cluster-ip-range=10.96.0.0/12
    - --tls-cert-file=/etc/kubernetes/pki/apiserver.crt
    - --tls-private-key-file=/etc/kubernetes/pki/apiserver.key
    image: registry.k8s.io/kube-apiserver:v1.29.4
    imagePullPolicy: IfNotPresent
    name: kube-apiserver
    resources:
      requests:
        cpu: 250m
    volumeMounts:
    - mountPath: /etc/ssl/certs
      name: ca-certs
      readOnly: true
    - mountPath: /etc/kubernetes/enc
      name: enc
      readOnly: true
    - mountPath: /etc/kubernetes/pki
      name: k8s-certs
      readOnly: true
  hostNetwork: true
  priority: 2000001000
  priorityClassName: system-node-critical
  securityContext:
    seccompProfile:
      type: RuntimeDefault
  volumes:
  - hostPath:
      path: /etc/ssl/certs
      type: DirectoryOrCreate
    name: ca-certs
  - hostPath:
      path: /etc/kubernetes/enc
      type: DirectoryOrCreate
    name: enc
  - hostPath:
      path: /etc/kubernetes/pki
      type: DirectoryOrCreate
    name: k8s-certs
status: {{}}
"""

SCHEDULER_YAML = """\
apiVersion: v1
kind: Pod
metadata:
  labels:
    component: kube-scheduler
    tier: control-plane
  name: kube-scheduler
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-scheduler
    - --authentication-kubeconfig=/etc/kubernetes/scheduler.conf
    - --authorization-kubeconfig=/etc/kubernetes/scheduler.conf
    - --bind-address=127.0.0.1
    - --kubeconfig=/etc/kubernetes/scheduler.conf
    - --leader-elect=true
    image: registry.k8s.io/kube-scheduler:v1.29.4
    name: kube-scheduler
  hostNetwork: true
"""

ENCRYPTION_CONFIG = """\
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
      - aescbc:
          keys:
            - name: key1
              secret: c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/Cg==
      - identity: {}
"""

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: ZmFrZQ==
    server: https://{ip}:6443
  name: kubernetes
users:
- name: {user}
  user:
    client-certificate-data: ZmFrZQ==
    client-key-data: ZmFrZQ==
"""

KUBELET_CONFIG = """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
staticPodPath: /etc/kubernetes/manifests
"""

# kubeadm's PKI: public parts 0644, private keys 0600 (kubeadm pkiutil.WriteKey).
PKI_FILES = (
    "ca.crt", "ca.key", "apiserver.crt", "apiserver.key",
    "apiserver-etcd-client.crt", "apiserver-etcd-client.key",
    "apiserver-kubelet-client.crt", "apiserver-kubelet-client.key",
    "front-proxy-ca.crt", "front-proxy-ca.key", "front-proxy-client.crt", "front-proxy-client.key",
    "sa.key", "sa.pub",
    "etcd/ca.crt", "etcd/ca.key", "etcd/healthcheck-client.crt", "etcd/healthcheck-client.key",
    "etcd/peer.crt", "etcd/peer.key", "etcd/server.crt", "etcd/server.key",
)
KUBECONFIGS = ("admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf")


@dataclass(frozen=True)
class KubeadmNode:
    root: Path
    name: str
    ip: str

    def host(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def expected_files(self) -> set[str]:
        """The host paths lifeboat must capture from this node, no more."""
        return {
            *(f"/etc/kubernetes/pki/{name}" for name in PKI_FILES),
            *(f"/etc/kubernetes/{name}" for name in KUBECONFIGS),
            "/etc/kubernetes/manifests/etcd.yaml",
            "/etc/kubernetes/manifests/kube-apiserver.yaml",
            "/etc/kubernetes/manifests/kube-scheduler.yaml",
            "/etc/kubernetes/enc/enc.yaml",
            "/var/lib/kubelet/config.yaml",
        }


def write(path: Path, text: str | bytes, mode: int = 0o644, mtime_ns: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def etcd_manifest(
    name: str, *, listen: str, advertise: str, peer: str, image: str = "registry.k8s.io/etcd:3.5.12-0"
) -> str:
    return ETCD_YAML.format(name=name, listen=listen, advertise=advertise, peer=peer, image=image)


def make_kubeadm_node(root: Path, name: str = "cp-1", ip: str = "10.0.0.11") -> KubeadmNode:
    """Write a single-control-plane kubeadm node under ``root``, with decoys that must not be captured."""
    node = KubeadmNode(root, name, ip)
    # Distinct, sub-second mtimes so tests can tell whether they survive.
    stamp = 1_700_000_000_123_456_789
    for index, pki in enumerate(PKI_FILES):
        mode = 0o600 if pki.endswith(".key") else 0o644
        write(node.host(f"/etc/kubernetes/pki/{pki}"), f"-----fake {pki}-----\n", mode, stamp + index * 1001)
    for conf in KUBECONFIGS:
        write(node.host(f"/etc/kubernetes/{conf}"), KUBECONFIG.format(ip=ip, user=conf), 0o600)
    write(
        node.host("/etc/kubernetes/manifests/etcd.yaml"),
        etcd_manifest(
            name, listen=f"https://127.0.0.1:2379,https://{ip}:2379",
            advertise=f"https://{ip}:2379", peer=f"https://{ip}:2380",
        ),
        0o600,
    )
    write(node.host("/etc/kubernetes/manifests/kube-apiserver.yaml"), APISERVER_YAML.format(ip=ip), 0o600)
    write(node.host("/etc/kubernetes/manifests/kube-scheduler.yaml"), SCHEDULER_YAML, 0o600)
    write(node.host("/etc/kubernetes/enc/enc.yaml"), ENCRYPTION_CONFIG, 0o600)
    node.host("/etc/kubernetes/enc").chmod(0o700)
    write(node.host("/var/lib/kubelet/config.yaml"), KUBELET_CONFIG, 0o644)
    # Decoys: kubeadm upgrade backups, editor leftovers, etcd data, kubelet's rotating certs.
    write(node.host("/etc/kubernetes/tmp/kubeadm-backup-manifests-2024/etcd.yaml"), "old", 0o600)
    write(node.host("/etc/kubernetes/manifests/.etcd.yaml.swp"), "swap", 0o600)
    write(node.host("/etc/kubernetes/admin.conf.bak"), "old", 0o600)
    write(node.host("/etc/kubernetes/enc/old-enc.yaml"), "old", 0o600)
    write(node.host("/var/lib/etcd/member/snap/db"), b"\0" * 4096, 0o600)
    write(node.host("/var/lib/kubelet/pki/kubelet-client-2024.pem"), "cert", 0o600)
    os.symlink(
        "/var/lib/kubelet/pki/kubelet-client-2024.pem",
        node.host("/var/lib/kubelet/pki/kubelet-client-current.pem"),
    )
    return node


def install_etcd_client_files(node: KubeadmNode, ca: Path, cert: Path, key: Path, stem: str) -> None:
    """Put a real CA and client pair where kubeadm keeps them (``stem`` without .crt/.key)."""
    shutil.copyfile(ca, node.host("/etc/kubernetes/pki/etcd/ca.crt"))
    shutil.copyfile(cert, node.host(stem + ".crt"))
    shutil.copyfile(key, node.host(stem + ".key"))

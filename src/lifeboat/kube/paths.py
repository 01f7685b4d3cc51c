"""Where kubeadm puts things on a control-plane node, and reading them under a ``root`` prefix.

Host paths are absolute strings as they appear on the node (``/etc/kubernetes/pki/ca.crt``).
Every reader takes a ``root`` directory so tests and chroots can stand in for ``/``:
the host path ``/etc/kubernetes`` is read at ``root/etc/kubernetes``.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from lifeboat.errors import UsageError

# kubeadm's default layout (cmd/kubeadm/app/constants in kubernetes/kubernetes).
KUBERNETES_DIR = "/etc/kubernetes"
MANIFESTS_DIR = "/etc/kubernetes/manifests"
PKI_DIR = "/etc/kubernetes/pki"
ETCD_MANIFEST = "/etc/kubernetes/manifests/etcd.yaml"
APISERVER_MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
ETCD_HEALTHCHECK_CLIENT = "/etc/kubernetes/pki/etcd/healthcheck-client"
APISERVER_ETCD_CLIENT = "/etc/kubernetes/pki/apiserver-etcd-client"


def normalize_host_path(path: str) -> str:
    """Return ``path`` as a clean absolute host path; a relative path is a ``UsageError``."""
    if not path.startswith("/"):
        raise UsageError(f"host path {path!r} is not absolute; give an absolute path")
    clean = posixpath.normpath(path)
    # normpath keeps a leading "//" (POSIX allows it a special meaning); a node never uses it.
    return "/" + clean.lstrip("/")


def on_host(root: Path, path: str) -> Path:
    """Return where the host path ``path`` is found under ``root``."""
    relative = normalize_host_path(path).lstrip("/")
    return root / relative if relative else root

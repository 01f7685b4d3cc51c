"""Turning flags, ``ETCDCTL_*``/``LIFEBOAT_*`` variables and the kubeadm node into connections.

Precedence for etcd: flags, then etcdctl's environment variables, then (on a kubeadm
control-plane node, or under ``--root``) the etcd static-pod manifest and kubeadm's client
certificate, then etcdctl's default ``127.0.0.1:2379``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from lifeboat.catalog.repository import BackupRepository
from lifeboat.errors import UsageError
from lifeboat.etcd import ConnectionSettings, TlsConfig
from lifeboat.kube.static_pods import etcd_endpoint_from_manifest
from lifeboat.repository import open_store

DEFAULT_ENDPOINT = "127.0.0.1:2379"


def add_etcd_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("etcd connection (etcdctl's flags and ETCDCTL_* variables)")
    g.add_argument("--endpoints", metavar="URLS",
                   help="comma-separated client URLs [$ETCDCTL_ENDPOINTS; on a kubeadm node: "
                        "from /etc/kubernetes/manifests/etcd.yaml; else 127.0.0.1:2379]")
    g.add_argument("--cacert", metavar="FILE", help="CA bundle to verify etcd's certificate [$ETCDCTL_CACERT]")
    g.add_argument("--cert", metavar="FILE", help="client certificate [$ETCDCTL_CERT]")
    g.add_argument("--key", metavar="FILE", help="client certificate's key [$ETCDCTL_KEY]")
    g.add_argument("--dial-timeout", metavar="SECONDS", type=_seconds,
                   help="time to connect to one endpoint (default 5) [$ETCDCTL_DIAL_TIMEOUT]")
    g.add_argument("--command-timeout", metavar="SECONDS", type=_seconds,
                   help="deadline of each request (default 10) [$ETCDCTL_COMMAND_TIMEOUT]")


def add_root_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", metavar="DIR", type=Path, default=Path(os.environ.get("LIFEBOAT_ROOT", "/")),
                        help="prefix for every host path (/etc/kubernetes, /var/lib/kubelet); "
                             "for chroots and tests [$LIFEBOAT_ROOT]")


def add_repo_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", metavar="URL",
                        help="repository: file:///path, /path or s3://bucket/prefix [$LIFEBOAT_REPO]; "
                             "S3 uses AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL")
    parser.add_argument("--cluster", metavar="NAME",
                        help="cluster name the backups are filed under [$LIFEBOAT_CLUSTER]")


def _seconds(text: str) -> float:
    value = text.strip().removesuffix("s")
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return seconds


@dataclass(frozen=True)
class ResolvedEtcd:
    settings: ConnectionSettings
    origin: str  # "flags", "environment", "kubeadm manifest <path>", "default"


def etcd_settings(args: argparse.Namespace) -> ResolvedEtcd:
    """Work out how to reach etcd from flags, environment and the kubeadm node."""
    env = os.environ
    endpoints = args.endpoints or env.get("ETCDCTL_ENDPOINTS")
    cacert = args.cacert or env.get("ETCDCTL_CACERT")
    cert = args.cert or env.get("ETCDCTL_CERT")
    key = args.key or env.get("ETCDCTL_KEY")
    dial = args.dial_timeout or _env_seconds("ETCDCTL_DIAL_TIMEOUT") or 5.0
    command = args.command_timeout or _env_seconds("ETCDCTL_COMMAND_TIMEOUT") or 10.0
    origin = "flags" if args.endpoints else "environment" if endpoints else ""
    if not endpoints and not (cacert or cert or key):
        found = etcd_endpoint_from_manifest(args.root)
        if found is not None:
            endpoints = ",".join(found.endpoints)
            cacert = str(found.ca) if found.ca else None
            cert = str(found.cert) if found.cert else None
            key = str(found.key) if found.key else None
            origin = f"kubeadm manifest {found.manifest}"
    if not endpoints:
        endpoints, origin = DEFAULT_ENDPOINT, "default"
    tls = None
    if cacert or cert or key:
        tls = TlsConfig(
            ca=Path(cacert) if cacert else None,
            cert=Path(cert) if cert else None,
            key=Path(key) if key else None,
        )
    settings = ConnectionSettings.from_flags(endpoints, tls, dial, command)
    return ResolvedEtcd(settings, origin or "flags")


def _env_seconds(name: str) -> float | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return _seconds(value)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"${name}: {exc}") from None


def repo_url(args: argparse.Namespace) -> str:
    url: str | None = args.repo or os.environ.get("LIFEBOAT_REPO")
    if not url:
        raise UsageError("no repository given: pass --repo URL or set LIFEBOAT_REPO")
    return url


def open_repository(args: argparse.Namespace, *, create: bool = False) -> BackupRepository:
    return BackupRepository.open(open_store(repo_url(args)), create=create)


def cluster_name(args: argparse.Namespace, default: str | None = "default") -> str | None:
    name: str | None = args.cluster or os.environ.get("LIFEBOAT_CLUSTER") or default
    return name

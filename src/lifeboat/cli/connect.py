"""Turning flags, ``ETCDCTL_*``/``LIFEBOAT_*`` variables, the config file and the kubeadm node
into connections.

Precedence: flags, then environment variables, then the config file (``--config`` or
``$LIFEBOAT_CONFIG``, see :mod:`lifeboat.config`), then, for etcd only (on a kubeadm
control-plane node, or under ``--root``) the etcd static-pod manifest and kubeadm's client
certificate, then etcdctl's default ``127.0.0.1:2379``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from lifeboat.catalog.age_keys import Identity, load_identities
from lifeboat.catalog.manifest_cache import ManifestCache, default_cache_dir
from lifeboat.catalog.repository import BackupRepository
from lifeboat.config import CONFIG_ENV, FlagValue, ResolvedConfig, resolve_config, store_environ
from lifeboat.config.rules import CONFIG_EXAMPLE, path_from_environment
from lifeboat.errors import UsageError
from lifeboat.etcd import ConnectionSettings, TlsConfig
from lifeboat.kube.static_pods import etcd_endpoint_from_manifest
from lifeboat.store import open_store

DEFAULT_ENDPOINT = "127.0.0.1:2379"


def _manifest_cache(args: argparse.Namespace, url: str) -> ManifestCache | None:
    if getattr(args, "no_cache", True):  # also for commands without the cache flags
        return None
    return ManifestCache((args.cache_dir or default_cache_dir(os.environ)).absolute(), url)


@dataclass(frozen=True)
class ResolvedEtcd:
    settings: ConnectionSettings
    origin: str  # "flags", "environment", "kubeadm manifest <path>", "default"


def etcd_settings(args: argparse.Namespace) -> ResolvedEtcd:
    """Work out how to reach etcd from flags, environment, config file and the kubeadm node."""
    resolved = resolved_config(args)
    etcd = resolved.config.etcd
    endpoints = ",".join(etcd.endpoints) if etcd.endpoints else None
    cacert, cert, key = etcd.cacert, etcd.cert, etcd.key
    origin = _describe(resolved, "etcd.endpoints") if endpoints else ""
    if not endpoints and not (cacert or cert or key):
        found = etcd_endpoint_from_manifest(host_root(args))
        if found is not None:
            endpoints = ",".join(found.endpoints)
            cacert, cert, key = found.ca, found.cert, found.key
            origin = f"kubeadm manifest {found.manifest}"
    if not endpoints:
        endpoints, origin = DEFAULT_ENDPOINT, "default"
    tls = TlsConfig(ca=cacert, cert=cert, key=key) if cacert or cert or key else None
    settings = ConnectionSettings.from_flags(endpoints, tls, etcd.dial_timeout, etcd.command_timeout)
    return ResolvedEtcd(settings, origin or "flags")


def host_root(args: argparse.Namespace) -> Path:
    """The host's filesystem root: ``--root``, else $LIFEBOAT_ROOT, else the config file's ``root``, else /.

    One that is not a directory is a mistake (UsageError), not an empty node: read as one, a
    backup went on to etcd's default endpoint without the node's certificates or files."""
    resolved = resolved_config(args)
    root = resolved.config.root.absolute()
    if not root.is_dir():
        raise UsageError(f"the host root {root} (from {_describe(resolved, 'root')}) is not a directory; "
                         "--root, $LIFEBOAT_ROOT or the config file's root names where the node's / is")
    return root


def _describe(resolved: ResolvedConfig, key: str) -> str:
    origin = resolved.origin(key)
    return {"flag": "flags", "env": "environment"}.get(origin.kind, f"config file {origin.name}")


# argparse destination -> (config key, flag as typed); values are converted in _flag_values.
_FLAG_KEYS = {
    "endpoints": ("etcd.endpoints", "--endpoints"),
    "cacert": ("etcd.cacert", "--cacert"),
    "cert": ("etcd.cert", "--cert"),
    "key": ("etcd.key", "--key"),
    "dial_timeout": ("etcd.dial-timeout", "--dial-timeout"),
    "command_timeout": ("etcd.command-timeout", "--command-timeout"),
    "repo": ("repository.url", "--repo"),
    "cluster": ("cluster", "--cluster"),
    "encrypt_to": ("encryption.recipients", "--encrypt-to"),
    "identity": ("encryption.identity-files", "--identity"),
    "zstd_level": ("backup.zstd-level", "--zstd-level"),
    "tmp_dir": ("backup.tmp-dir", "--tmp-dir"),
    "label": ("backup.labels", "--label"),
    "flush_interval": ("capture.flush-interval", "--flush-interval"),
    "segment_max_bytes": ("capture.segment-max-bytes", "--segment-max-bytes"),
    "spool_dir": ("capture.spool-dir", "--spool-dir"),
    "spool_max_bytes": ("capture.spool-max-bytes", "--spool-max-bytes"),
}


def config_file(args: argparse.Namespace) -> Path | None:
    """The config file ``--config`` or, without it, ``$LIFEBOAT_CONFIG`` names (None: neither)."""
    given: Path | None = getattr(args, "config", None)
    return given or path_from_environment(os.environ, CONFIG_ENV, CONFIG_EXAMPLE)


def resolved_config(args: argparse.Namespace) -> ResolvedConfig:
    """The config for this command: flags > environment > ``--config`` file > defaults."""
    cached: ResolvedConfig | None = getattr(args, "_resolved_config", None)
    if cached is None:
        cached = resolve_config(config_file(args), os.environ, _flag_values(args))
        args._resolved_config = cached
    return cached


def age_identities(args: argparse.Namespace) -> list[Identity] | None:
    """The age identities that decrypt backups and segments: the ``--identity`` files, else the
    config file's ``encryption.identity-files``; None when neither names one."""
    files = resolved_config(args).config.encryption.identity_files
    return load_identities([str(path) for path in files]) if files else None


def temp_dir(args: argparse.Namespace) -> Path | None:
    """Where snapshots are spooled and unpacked: ``--tmp-dir``, else the config file's
    ``backup.tmp-dir``; None means the system temp dir."""
    return resolved_config(args).config.backup.tmp_dir


def _flag_values(args: argparse.Namespace) -> dict[str, FlagValue]:
    """The config keys set by flags the user actually gave (None and [] mean "not given")."""
    given: dict[str, FlagValue] = {}
    for dest, (key, flag) in _FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is None or value == []:
            continue
        if dest == "label":
            value = dict(_label(text) for text in value)
        given[key] = FlagValue(flag, value)
    if getattr(args, "no_files", False):
        given["backup.capture-files"] = FlagValue("--no-files", False)
    if (root := getattr(args, "root", None)) is not None:
        given["root"] = FlagValue("--root", root)
    return given


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--label {text!r}: expected KEY=VALUE")
    return key, value


def repo_url(args: argparse.Namespace) -> str:
    url = resolved_config(args).config.repository.url
    if not url:
        raise UsageError("no repository given: pass --repo URL, set LIFEBOAT_REPO, "
                         "or set repository.url in the config file")
    return url


def open_repository(args: argparse.Namespace, *, create: bool = False) -> BackupRepository:
    environ = store_environ(resolved_config(args).config, os.environ)
    store = open_store(repo_url(args), environ)
    return BackupRepository.open(store, create=create, cache=_manifest_cache(args, store.url))


def cluster_name(args: argparse.Namespace, default: str | None = "default") -> str | None:
    """The cluster from flag, environment or config file; ``default`` when none names one."""
    resolved = resolved_config(args)
    return resolved.config.cluster if resolved.is_set("cluster") else default

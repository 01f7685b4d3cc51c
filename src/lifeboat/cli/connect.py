"""Turning flags, ``ETCDCTL_*``/``LIFEBOAT_*`` variables, the config file and the kubeadm node
into connections.

Precedence: flags, then environment variables, then the config file (``--config`` or
``$LIFEBOAT_CONFIG``, see :mod:`lifeboat.config`), then, for etcd only (on a kubeadm
control-plane node, or under ``--root``) the etcd static-pod manifest and kubeadm's client
certificate, then etcdctl's default ``127.0.0.1:2379``.
"""

from __future__ import annotations

import argparse
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lifeboat.catalog.age_keys import Identity, load_identities
from lifeboat.catalog.manifest_cache import CACHE_DIR_ENV, ManifestCache, default_cache_dir
from lifeboat.catalog.repository import BackupRepository
from lifeboat.config import CONFIG_ENV, FlagValue, ResolvedConfig, resolve_config, store_environ
from lifeboat.config.values import LONGEST_DURATION
from lifeboat.errors import UsageError
from lifeboat.etcd import ConnectionSettings, TlsConfig
from lifeboat.kube.static_pods import etcd_endpoint_from_manifest
from lifeboat.store import open_store

DEFAULT_ENDPOINT = "127.0.0.1:2379"


def add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser, name: str,
    run: Callable[[argparse.Namespace], int], *flags: Callable[[argparse.ArgumentParser], None],
    raw: bool = False,
) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` that calls ``run``, with the shared ``flags`` (``add_etcd_flags``...).

    Its help is ``run``'s docstring: the first line for the list of commands, the rest for
    its own ``--help``, re-wrapped by argparse unless ``raw`` keeps the docstring's lines.
    """
    summary, _, description = (inspect.getdoc(run) or "").partition("\n\n")
    parser = sub.add_parser(
        name, parents=[common], help=summary, description=description or None,
        formatter_class=argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter,
    )
    for add in flags:
        add(parser)
    parser.set_defaults(func=run)
    return parser


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``; safe to call more than once on one parser."""
    if "--config" in parser._option_string_actions:
        return
    parser.add_argument("--config", metavar="FILE", type=Path,
                        help="YAML config file; flags and environment variables override it "
                             f"[${CONFIG_ENV}]")


def add_etcd_flags(parser: argparse.ArgumentParser) -> None:
    add_config_flag(parser)
    g = parser.add_argument_group("etcd connection (etcdctl's flags and ETCDCTL_* variables)")
    g.add_argument("--endpoints", metavar="URLS",
                   help="comma-separated client URLs [$ETCDCTL_ENDPOINTS; on a kubeadm node: "
                        "from /etc/kubernetes/manifests/etcd.yaml; else 127.0.0.1:2379]")
    g.add_argument("--cacert", metavar="FILE", help="CA bundle to verify etcd's certificate [$ETCDCTL_CACERT]")
    g.add_argument("--cert", metavar="FILE", help="client certificate [$ETCDCTL_CERT]")
    g.add_argument("--key", metavar="FILE", help="client certificate's key [$ETCDCTL_KEY]")
    g.add_argument("--dial-timeout", metavar="SECONDS", type=positive_seconds,
                   help="time to connect to one endpoint (default 5) [$ETCDCTL_DIAL_TIMEOUT]")
    g.add_argument("--command-timeout", metavar="SECONDS", type=positive_seconds,
                   help="deadline of each request (default 10) [$ETCDCTL_COMMAND_TIMEOUT]")


def add_root_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", metavar="DIR", type=_absolute, default=_absolute(os.environ.get("LIFEBOAT_ROOT") or "/"),
                        help="prefix for every host path (/etc/kubernetes, /var/lib/kubelet); "
                             "for chroots and tests [$LIFEBOAT_ROOT]")


def _absolute(text: str) -> Path:
    """Host paths found under --root (data dirs, certificates) must not depend on the cwd."""
    return Path(text).absolute()


def add_repo_flags(parser: argparse.ArgumentParser) -> None:
    add_config_flag(parser)
    parser.add_argument("--repo", metavar="URL",
                        help="repository: file:///path, /path or s3://bucket/prefix [$LIFEBOAT_REPO]; "
                             "S3 uses AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL")
    parser.add_argument("--cluster", metavar="NAME",
                        help="cluster name the backups are filed under [$LIFEBOAT_CLUSTER]")


def add_identity_flag(parser: argparse.ArgumentParser, reads: str = "encrypted backups") -> None:
    """``--identity``, which replaces the config file's ``encryption.identity-files`` (see :func:`age_identities`)."""
    parser.add_argument("--identity", "-i", action="append", default=[], metavar="FILE",
                        help=f"age identity file (or SSH private key) for {reads}; repeatable; replaces "
                             "the config file's list [encryption.identity-files]")


def add_tmp_dir_flag(parser: argparse.ArgumentParser, used_for: str) -> None:
    """``--tmp-dir``, which overrides the config file's ``backup.tmp-dir`` (see :func:`temp_dir`)."""
    parser.add_argument("--tmp-dir", type=Path, metavar="DIR",
                        help=f"{used_for} (default: the system temp dir) [backup.tmp-dir]")


def add_cache_flags(parser: argparse.ArgumentParser) -> None:
    """``--cache-dir`` and ``--no-cache``, for commands that read many manifests."""
    g = parser.add_argument_group("manifest cache (which backups exist is always read from the repository)")
    g.add_argument("--cache-dir", metavar="DIR", type=Path,
                   help="keep manifests already read here, readable only by you, so they are not "
                        f"downloaded again [${CACHE_DIR_ENV}; default $XDG_CACHE_HOME/lifeboat or ~/.cache/lifeboat]")
    g.add_argument("--no-cache", action="store_true",
                   help="download every manifest shown and keep none")


def _manifest_cache(args: argparse.Namespace, url: str) -> ManifestCache | None:
    if getattr(args, "no_cache", True):  # also for commands without the cache flags
        return None
    return ManifestCache((args.cache_dir or default_cache_dir(os.environ)).absolute(), url)


def positive_seconds(text: str) -> float:
    """A timeout flag: seconds, more than 0 and at most a century (``nan`` and ``inf`` are refused)."""
    value = text.strip().removesuffix("s")
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < seconds <= LONGEST_DURATION.total_seconds():
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds and at most 100 years, got {text!r}")
    return seconds


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
        found = etcd_endpoint_from_manifest(args.root)
        if found is not None:
            endpoints = ",".join(found.endpoints)
            cacert, cert, key = found.ca, found.cert, found.key
            origin = f"kubeadm manifest {found.manifest}"
    if not endpoints:
        endpoints, origin = DEFAULT_ENDPOINT, "default"
    tls = TlsConfig(ca=cacert, cert=cert, key=key) if cacert or cert or key else None
    settings = ConnectionSettings.from_flags(endpoints, tls, etcd.dial_timeout, etcd.command_timeout)
    return ResolvedEtcd(settings, origin or "flags")


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


def resolved_config(args: argparse.Namespace) -> ResolvedConfig:
    """The config for this command: flags > environment > ``--config`` file > defaults."""
    cached: ResolvedConfig | None = getattr(args, "_resolved_config", None)
    if cached is None:
        path = getattr(args, "config", None) or os.environ.get(CONFIG_ENV) or None
        cached = resolve_config(Path(path) if path else None, os.environ, _flag_values(args))
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
    root = getattr(args, "root", None)
    # --root defaults to $LIFEBOAT_ROOT or /, which the config layer reads itself.
    if root is not None and root != Path(os.environ.get("LIFEBOAT_ROOT") or "/"):
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

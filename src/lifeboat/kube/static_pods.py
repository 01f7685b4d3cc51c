"""kubeadm static-pod manifests: container flags, and what they tell us about etcd and the API server.

kubeadm writes one Pod manifest per control-plane component into ``/etc/kubernetes/manifests``;
the component's whole configuration is its container command line. Paths in that command line
are container paths; kubeadm mounts them from the same host paths, and we map them back
through the pod's ``hostPath`` volumes anyway, then under ``root``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from lifeboat.config.yaml_nesting import NestingLimitedLoader
from lifeboat.errors import UsageError
from lifeboat.regular_files import read_small
from lifeboat.kube.paths import (
    APISERVER_ETCD_CLIENT,
    APISERVER_MANIFEST,
    ETCD_HEALTHCHECK_CLIENT,
    ETCD_MANIFEST,
    normalize_host_path,
    on_host,
)


@dataclass(frozen=True)
class Flags:
    """A command line's flags in order; a flag given without a value has value None."""

    items: tuple[tuple[str, str | None], ...]

    def __contains__(self, name: object) -> bool:
        return any(flag == name for flag, _ in self.items)

    def values(self, name: str) -> tuple[str, ...]:
        """Every value given to ``name``, in order (repeated flags keep all of theirs)."""
        return tuple(value for flag, value in self.items if flag == name and value is not None)

    def value(self, name: str) -> str | None:
        """The value of ``name``; the last one wins when it is repeated, as in Go's flag packages."""
        found = self.values(name)
        return found[-1] if found else None

    def list(self, name: str) -> tuple[str, ...]:
        """The comma-separated values of ``name`` (e.g. URL lists), over all its occurrences."""
        return tuple(part for value in self.values(name) for part in value.split(",") if part)


def parse_flags(argv: Iterable[str]) -> Flags:
    """Parse ``--flag=value``, ``--flag value`` and bare ``--flag``; other words are skipped.

    Without knowing which flags are boolean, a word not starting with ``-`` after a flag is
    taken as its value; static pods pass no positional arguments, so nothing is lost.
    """
    items: list[tuple[str, str | None]] = []
    words = list(argv)
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            break
        if not word.startswith("-") or word == "-":
            continue
        name, eq, value = word.lstrip("-").partition("=")
        if eq:
            items.append((name, value))
        elif i < len(words) and not words[i].startswith("-"):
            items.append((name, words[i]))
            i += 1
        else:
            items.append((name, None))
    return Flags(tuple(items))


@dataclass(frozen=True)
class StaticPod:
    """One container of a static-pod manifest, as far as lifeboat needs it."""

    manifest: Path
    container: str
    image: str
    flags: Flags
    mounts: tuple[tuple[str, str], ...]
    """(container path, host path) for every ``hostPath`` volume the container mounts."""

    def host_path(self, container_path: str) -> str:
        """Map a container path back to the host path it is mounted from."""
        path = normalize_host_path(container_path)
        best: tuple[str, str] | None = None
        for mount, host in self.mounts:
            inside = path == mount or path.startswith(mount.rstrip("/") + "/")
            if inside and (best is None or len(mount) > len(best[0])):
                best = (mount, host)
        if best is None:
            return path
        mount, host = best
        return normalize_host_path(host + "/" + path[len(mount):])


def read_static_pod(manifest: Path, container: str | None = None) -> StaticPod | None:
    """Read a static-pod manifest; None when the file does not exist.

    The container named ``container`` is used when there is one, else the first container.
    A file that is not a Pod manifest raises ``UsageError`` naming it.
    """
    if not manifest.exists():
        return None
    data = read_small(manifest, "static-pod manifest")  # a few KiB; not a FIFO, not /dev/zero
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot read static-pod manifest {manifest}: {exc}") from None
    try:
        document = yaml.load(text, Loader=NestingLimitedLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"static-pod manifest {manifest} is not valid YAML ({problem}); fix it or pass flags") from exc
    return _pod_from_document(manifest, document, container)


def _bad_manifest(manifest: Path, what: str) -> UsageError:
    return UsageError(f"static-pod manifest {manifest} is not a usable Pod: {what}; fix it or pass flags")


def _pod_from_document(manifest: Path, document: object, container: str | None) -> StaticPod:
    if not isinstance(document, Mapping) or document.get("kind") != "Pod":
        raise _bad_manifest(manifest, "no 'kind: Pod' at the top")
    spec = document.get("spec")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("containers"), list):
        raise _bad_manifest(manifest, "no spec.containers")
    chosen = _choose_container(spec["containers"], container)
    if chosen is None:
        raise _bad_manifest(manifest, "spec.containers holds no container")
    argv = [*_strings(chosen.get("command")), *_strings(chosen.get("args"))]
    if not argv:
        raise _bad_manifest(manifest, "the container has no command")
    return StaticPod(
        manifest=manifest,
        container=_text(chosen.get("name", "")),
        image=_text(chosen.get("image", "")),
        flags=parse_flags(argv),
        mounts=_host_mounts(spec, chosen),
    )


def _choose_container(containers: list[Any], name: str | None) -> Mapping[str, Any] | None:
    candidates = [entry for entry in containers if isinstance(entry, Mapping)]
    named = [entry for entry in candidates if entry.get("name") == name]
    chosen = named or candidates
    return chosen[0] if chosen else None


def _strings(value: object) -> list[str]:
    if not isinstance(value, list):
        return []
    return [_text(word) for word in value]


def _text(value: object) -> str:
    """A scalar as text; a list or mapping as "" (it is no word of a command line). ``str()`` of
    one made of YAML aliases (each a list of the one before: a "billion laughs") never ended."""
    return "" if isinstance(value, (list, Mapping)) else str(value)


def _host_mounts(spec: Mapping[str, Any], container: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    host_paths: dict[str, str] = {}
    for volume in spec.get("volumes") or []:
        if isinstance(volume, Mapping) and isinstance(volume.get("hostPath"), Mapping):
            path = volume["hostPath"].get("path")
            if isinstance(path, str) and path.startswith("/"):
                host_paths[_text(volume.get("name"))] = path
    mounts: list[tuple[str, str]] = []
    for mount in container.get("volumeMounts") or []:
        if not isinstance(mount, Mapping):
            continue
        host = host_paths.get(_text(mount.get("name")))
        target = mount.get("mountPath")
        if host is not None and isinstance(target, str) and target.startswith("/"):
            mounts.append((normalize_host_path(target), normalize_host_path(host)))
    return tuple(mounts)


# kubeadm tags its etcd images "<etcd version>-<build>" (registry.k8s.io/etcd:3.5.9-0);
# upstream etcd images are tagged "v<version>" (gcr.io/etcd-development/etcd:v3.5.9).
_ETCD_TAG = re.compile(r"v?(\d+\.\d+\.\d+)(?:-\d+)?")


def etcd_version_from_image(image: str) -> str | None:
    """The etcd version an image reference names by its tag, or None if the tag is not one."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    match = _ETCD_TAG.fullmatch(last.rsplit(":", 1)[1])
    return match.group(1) if match else None


@dataclass(frozen=True)
class EtcdDiscovery:
    """What the etcd static pod says about reaching and rebuilding the local member.

    Paths are where the files are found under the ``root`` that was searched; ``ca`` and
    ``data_dir`` are what the manifest names, whether or not they exist. ``cert`` and ``key``
    are None when neither kubeadm client certificate pair exists there.
    """

    manifest: Path
    endpoints: tuple[str, ...]
    ca: Path | None
    cert: Path | None
    key: Path | None
    name: str | None
    data_dir: Path | None
    advertise_client_urls: tuple[str, ...]
    initial_advertise_peer_urls: tuple[str, ...]
    initial_cluster: str | None
    initial_cluster_token: str | None
    initial_cluster_state: str | None
    image: str
    version: str | None


def etcd_endpoint_from_manifest(root: Path, manifest: str = ETCD_MANIFEST) -> EtcdDiscovery | None:
    """Discover the local etcd member from kubeadm's etcd static pod; None without one.

    ``manifest`` is the host path of the pod file, for one kept elsewhere (a restore holds
    it outside the kubelet's directory while etcd must stay stopped).
    """
    pod = read_static_pod(on_host(root, manifest), container="etcd")
    if pod is None:
        return None
    flags = pod.flags
    advertised = flags.list("advertise-client-urls")
    endpoints = _loopback_urls(flags.list("listen-client-urls")) or advertised
    if not endpoints:
        raise _bad_manifest(pod.manifest, "etcd has neither --listen-client-urls nor --advertise-client-urls")
    cert, key = _client_cert(root)
    return EtcdDiscovery(
        manifest=pod.manifest,
        endpoints=endpoints,
        ca=_flag_path(root, pod, "trusted-ca-file"),
        cert=cert,
        key=key,
        name=flags.value("name"),
        data_dir=_flag_path(root, pod, "data-dir"),
        advertise_client_urls=advertised,
        initial_advertise_peer_urls=flags.list("initial-advertise-peer-urls"),
        initial_cluster=flags.value("initial-cluster"),
        initial_cluster_token=flags.value("initial-cluster-token"),
        initial_cluster_state=flags.value("initial-cluster-state"),
        image=pod.image,
        version=etcd_version_from_image(pod.image),
    )


def _flag_path(root: Path, pod: StaticPod, flag: str) -> Path | None:
    value = pod.flags.value(flag)
    if not value:
        return None
    if not value.startswith("/"):
        raise _bad_manifest(pod.manifest, f"--{flag} is not an absolute path")
    return on_host(root, pod.host_path(value))


def _loopback_urls(urls: Sequence[str]) -> tuple[str, ...]:
    """The URLs a local client can use over loopback; a wildcard listener becomes 127.0.0.1."""
    found: list[str] = []
    for url in urls:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host == "localhost":
            found.append(url)
            continue
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            continue
        if address.is_loopback:
            found.append(url)
        elif address.is_unspecified and parts.port is not None:
            loopback = "127.0.0.1" if address.version == 4 else "[::1]"
            found.append(f"{parts.scheme}://{loopback}:{parts.port}")
    return tuple(dict.fromkeys(found))


def _client_cert(root: Path) -> tuple[Path | None, Path | None]:
    # kubeadm issues healthcheck-client for its etcd liveness probe and apiserver-etcd-client
    # for the API server; both are signed by the etcd CA and accepted as etcd clients.
    for stem in (ETCD_HEALTHCHECK_CLIENT, APISERVER_ETCD_CLIENT):
        cert, key = on_host(root, stem + ".crt"), on_host(root, stem + ".key")
        if cert.is_file() and key.is_file():
            return cert, key
    return None, None


@dataclass(frozen=True)
class ApiServerFlags:
    """What the kube-apiserver static pod says that lifeboat needs; paths are under ``root``."""

    manifest: Path
    flags: Flags
    encryption_provider_config: Path | None
    etcd_servers: tuple[str, ...]
    etcd_cafile: Path | None
    etcd_certfile: Path | None
    etcd_keyfile: Path | None


def apiserver_flags(root: Path, manifest: Path | None = None) -> ApiServerFlags | None:
    """Read kubeadm's kube-apiserver static pod (at ``manifest`` if given); None without one."""
    pod = read_static_pod(manifest or on_host(root, APISERVER_MANIFEST), container="kube-apiserver")
    if pod is None:
        return None
    return ApiServerFlags(
        manifest=pod.manifest,
        flags=pod.flags,
        encryption_provider_config=_flag_path(root, pod, "encryption-provider-config"),
        etcd_servers=pod.flags.list("etcd-servers"),
        etcd_cafile=_flag_path(root, pod, "etcd-cafile"),
        etcd_certfile=_flag_path(root, pod, "etcd-certfile"),
        etcd_keyfile=_flag_path(root, pod, "etcd-keyfile"),
    )

"""Which control-plane files a kubeadm cluster cannot be rebuilt without (host paths, read under ``root``).

* ``/etc/kubernetes/pki/**`` — every file and symlink of the tree (CAs, keys, etcd certs);
* ``/etc/kubernetes/*.conf`` — the kubeconfigs (admin, controller-manager, scheduler, kubelet);
* ``/etc/kubernetes/manifests/*`` — the static pods (dotfiles skipped: the kubelet ignores them);
* ``/var/lib/kubelet/config.yaml``;
* the file kube-apiserver's ``--encryption-provider-config`` names, wherever it is;
* for every symlink among these, what it points to (a captured link alone restores nothing).

What cannot be captured is logged as a warning and left out: a FIFO, socket or device in these
trees (reading one could block or never end), a file or symlink whose name or target is not
UTF-8, and what a symlink points to when that is a directory (its files are not captured: only
the link is) or nothing.
Reading and archiving them is the catalog's (:mod:`lifeboat.catalog.file_archive`).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from lifeboat.errors import OperationFailed
from lifeboat.kube.paths import KUBELET_CONFIG, KUBERNETES_DIR, MANIFESTS_DIR, PKI_DIR, normalize_host_path, on_host
from lifeboat.kube.static_pods import apiserver_flags

_log = logging.getLogger(__name__)


def control_plane_paths(root: Path) -> list[str]:
    """The host paths of the control-plane files under ``root``, sorted; empty on a non-kubeadm host."""
    pending = [
        *_tree(root, PKI_DIR),
        *_entries(root, KUBERNETES_DIR, lambda name: name.endswith(".conf")),
        *_entries(root, MANIFESTS_DIR, lambda name: True),
    ]
    if _is_file_or_link(root, on_host(root, KUBELET_CONFIG)):
        pending.append(KUBELET_CONFIG)
    encryption = _encryption_config(root)
    if encryption is not None:
        pending.append(encryption)
    found: set[str] = set()
    while pending:
        path = pending.pop()
        if path in found:
            continue  # also ends symlink loops
        found.add(path)
        target = _link_target(root, path)
        if target is not None:
            pending.append(target)
    return sorted(path for path in found if _recordable(root, path))


def in_captured_tree(path: str) -> bool:
    """Whether the clean absolute host ``path`` is one of the kubeadm files a backup captures by
    where it is (the encryption config and symlink targets are captured because something names them)."""
    directory, _, name = path.rpartition("/")
    return (path.startswith(PKI_DIR + "/") or path == KUBELET_CONFIG
            or (directory == KUBERNETES_DIR and name.endswith(".conf") and not name.startswith("."))
            or (directory == MANIFESTS_DIR and bool(name) and not name.startswith(".")))


def holds_private_key(path: str) -> bool:
    """Whether the clean absolute host ``path`` is one kubeadm writes a private key to: a ``.key``
    file of the PKI tree (CAs, service-account signing key) or a kubeconfig (``client-key-data``)."""
    directory, _, name = path.rpartition("/")
    return ((path.startswith(PKI_DIR + "/") and name.endswith(".key"))
            or (directory == KUBERNETES_DIR and name.endswith(".conf")))


def link_target_path(path: str, target: str) -> str:
    """The clean host path a symlink at host ``path`` holding ``target`` points to (lexically)."""
    if not target.startswith("/"):
        target = os.path.dirname(path) + "/" + target
    return normalize_host_path(target)


def _encryption_config(root: Path) -> str | None:
    flags = apiserver_flags(root)
    if flags is None or flags.encryption_provider_config is None:
        return None
    host_path = "/" + flags.encryption_provider_config.relative_to(root).as_posix()
    if not os.path.lexists(flags.encryption_provider_config):
        raise OperationFailed(
            f"kube-apiserver's --encryption-provider-config names {host_path}, which does not exist;"
            " restore that file or fix the manifest before backing up"
        )
    if not _is_file_or_link(root, flags.encryption_provider_config):
        kind = _file_type(os.lstat(flags.encryption_provider_config).st_mode)
        raise OperationFailed(
            f"kube-apiserver's --encryption-provider-config names {host_path}, which is a {kind}, not a file;"
            " fix the manifest before backing up"
        )
    return host_path


def _captured_directory(root: Path, directory: str) -> Path | None:
    """Where the captured ``directory`` (pki, manifests) is read under ``root``; None if it points nowhere.

    A symlink there is followed when the kernel takes it where the host would. Under a root
    other than ``/`` (a container that mounts the host's /etc/kubernetes at /host) an absolute
    target is taken outside that root, and a target the container lacks is nothing: that fails
    the capture, since a backup that said it succeeded without the PKI would be found out at a
    restore. On the host itself, a symlink to nothing is only noted.
    """
    base = on_host(root, directory)
    if not os.path.islink(base):
        return base
    target = link_target_path(directory, os.readlink(base))
    followed = os.path.realpath(base)
    if followed == os.path.realpath(on_host(root, target)) and os.path.isdir(followed):
        return base
    if root.resolve() != Path("/"):
        raise OperationFailed(
            f"{directory} is a symlink to {target}, which lifeboat cannot follow under root {root} as the host "
            f"does (the target is absolute, or not there): its files would not be captured; make {base} the "
            f"directory itself (mount the host's {target} there)"
        )
    _log.warning("%s is a symlink to %s, which is not a directory: nothing in it is captured", directory, target)
    return None


def _tree(root: Path, top: str) -> Iterator[str]:
    def fail(exc: OSError) -> None:
        where = _host_path_of(root, Path(exc.filename)) if exc.filename else top
        raise _read_failure(where, exc)

    base = _captured_directory(root, top)
    if base is None:
        return
    try:
        if not stat.S_ISDIR(os.stat(base).st_mode):
            return
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _read_failure(top, exc) from exc
    for directory, dirnames, filenames in os.walk(base, onerror=fail):
        dirnames.sort()
        here = Path(directory)
        for name in dirnames:
            if os.path.islink(here / name):
                yield _host_path_of(root, here / name)
        for name in sorted(filenames):
            if _capturable(root, here / name):
                yield _host_path_of(root, here / name)


def _entries(root: Path, directory: str, wanted: Callable[[str], bool]) -> Iterator[str]:
    base = _captured_directory(root, directory)
    if base is None:
        return
    try:
        names = sorted(os.listdir(base))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _read_failure(directory, exc) from exc
    for name in names:
        if not name.startswith(".") and wanted(name) and _capturable(root, base / name):
            yield f"{directory}/{name}"


def _is_file_or_link(root: Path, path: Path) -> bool:
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise _read_failure(_host_path_of(root, path), exc) from exc
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def _recordable(root: Path, path: str) -> bool:
    """Whether a backup's manifest can record ``path`` (and a symlink's target): as UTF-8 text.

    A name of other bytes (os.fsdecode's surrogate escapes) would make the manifest unreadable,
    and the backup with it; such a file or symlink is left out, with a warning.
    """
    try:
        target = os.readlink(on_host(root, path))
    except OSError:
        target = ""
    for text, what in ((path, "name"), (target, "target")):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            _log.warning("control-plane file %s: its %s is not UTF-8 text: not captured (a manifest records "
                         "names as UTF-8); rename it", _shown_path(path), what)
            return False
    return True


def _shown_path(path: str) -> str:
    """``path`` as text, a byte that is not UTF-8 written as its escape (``\\xff``)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _capturable(root: Path, path: Path) -> bool:
    """Whether ``path`` (in a captured tree) is a file or symlink; a FIFO, socket or device is noted."""
    if _is_file_or_link(root, path):
        return True
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    if not stat.S_ISDIR(mode):
        _log.warning("control-plane file %s is a %s, not a regular file: not captured",
                     _shown_path(_host_path_of(root, path)), _file_type(mode))
    return False


def _file_type(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "directory" if stat.S_ISDIR(mode) else "special file"


def _host_path_of(root: Path, local: Path) -> str:
    return "/" + local.relative_to(root).as_posix()


def _link_target(root: Path, path: str) -> str | None:
    """The host path a symlink points to, when that is a file or symlink; else None."""
    local = on_host(root, path)
    try:
        target = os.readlink(local)
    except OSError:  # not a symlink, or gone
        return None
    resolved = link_target_path(path, target)
    if _is_file_or_link(root, on_host(root, resolved)):
        return resolved
    try:
        what = f"a {_file_type(os.stat(on_host(root, resolved)).st_mode)}"
    except OSError:
        what = "nothing (it does not exist)"
    extra = ", not the files in it: back them up yourself" if what == "a directory" else ""
    _log.warning("control-plane symlink %s points to %s, which is %s: only the link is captured%s",
                 _shown_path(path), _shown_path(resolved), what, extra)
    return None



def _read_failure(path: str, exc: OSError) -> OperationFailed:
    reason = exc.strerror or type(exc).__name__
    return OperationFailed(f"cannot read control-plane file {path}: {reason}; run lifeboat as root or fix its permissions")

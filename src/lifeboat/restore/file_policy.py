"""Which files of a backup's control-plane archive a restore may put on the host, and where.

Backups are not signed: age gives secrecy, not authenticity, so whoever may write the
repository can forge a manifest and its archive. A restore therefore puts back only what
lifeboat itself captures (:mod:`lifeboat.kube.control_plane_files`): the kubeadm trees, the
encryption config the archived kube-apiserver manifest names, and the targets of those
files' symlinks. Anything else in the archive refuses the whole restore of files before one
file is changed. Set-id and sticky bits are never installed (:mod:`lifeboat.restore.files`).

A file is only written into a directory no other local user could have changed: every
directory and symlink on the way to it is owned by root or the user running lifeboat, and no
directory on the way is writable by group or others unless it is sticky (as ``/tmp``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from lifeboat.errors import IntegrityError, OperationFailed, UsageError
from lifeboat.kube.control_plane_files import in_captured_tree, link_target_path
from lifeboat.kube.paths import APISERVER_MANIFEST, on_host
from lifeboat.kube.static_pods import apiserver_flags

_MAX_LINKS = 40  # as the kernel's limit on symlinks followed in one lookup (ELOOP)


def refuse_unrestorable(staging: Path, paths: Sequence[str], root: Path,
                        destination: Callable[[str], str]) -> None:
    """Raise unless every staged file is one lifeboat captures and its host directory is safe.

    ``staging`` holds the extracted archive (host paths below it); ``paths`` are its files.
    """
    present = set(paths)
    captured = {path for path in paths if in_captured_tree(path)}
    encryption = _encryption_config(staging, present)
    if encryption in present:
        captured.add(encryption)
    pending = list(captured)
    while pending:
        path = pending.pop()
        local = on_host(staging, path)
        target = link_target_path(path, os.readlink(local)) if local.is_symlink() else None
        if target in present and target not in captured:
            captured.add(target)
            pending.append(target)
    for path in paths:
        if path not in captured:
            raise IntegrityError(
                f"the backup's control-plane archive holds {path}, which is not a file lifeboat captures "
                "(kubeadm's pki, kubeconfigs, static pods, kubelet config, the encryption config, their "
                "symlinks' targets); no file was restored: restore without --files or from another backup")
    refuse_unsafe_destinations(paths, root, destination)


def refuse_unsafe_destinations(paths: Sequence[str], root: Path, destination: Callable[[str], str]) -> None:
    """Raise unless each clean absolute host path of ``paths`` may be written (see the module doc)."""
    for path in paths:
        host = on_host(root, destination(path))
        # Capture takes files and symlinks only. A forged kube-apiserver manifest may name any path
        # as its encryption config (/usr/bin): moving a directory aside for it is never a restore.
        if not in_captured_tree(path) and _is_directory(host):
            raise IntegrityError(
                f"the backup's control-plane archive would replace the directory {path} with a file; no file "
                "was restored: restore without --files or from another backup")
        directory = host.parent
        unsafe = untrusted_on_the_way(directory)
        if unsafe is not None:
            raise OperationFailed(f"cannot restore {destination(path)}: {unsafe}; no file was restored: "
                                  "make that directory root's and not writable by others, then re-run")


def _is_directory(path: Path) -> bool:
    """Whether ``path`` is a directory itself (not a symlink to one); False if it cannot be looked at."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _encryption_config(staging: Path, present: set[str]) -> str | None:
    """The host path the archived kube-apiserver manifest names as its encryption config."""
    manifest, seen = APISERVER_MANIFEST, 0
    while manifest in present and on_host(staging, manifest).is_symlink() and seen < _MAX_LINKS:
        manifest, seen = link_target_path(manifest, os.readlink(on_host(staging, manifest))), seen + 1
    local = on_host(staging, manifest)
    if manifest not in present or local.is_symlink():
        return None
    try:
        flags = apiserver_flags(staging, local)
    except UsageError:
        return None  # not a manifest lifeboat can read: it names no file to restore
    if flags is None or flags.encryption_provider_config is None:
        return None
    return "/" + flags.encryption_provider_config.relative_to(staging).as_posix()


def untrusted_on_the_way(directory: Path) -> str | None:
    """Why another local user could change what is at ``directory`` (None when nobody could).

    Follows symlinks as the kernel does; a missing part is fine (lifeboat makes it, 0755).
    """
    trusted_owners = {0, os.geteuid()}
    here, pending, links = Path("/"), list(reversed(directory.parts[1:])), 0
    while True:
        try:
            st = os.lstat(here)
        except OSError as exc:
            return f"{here} cannot be looked at ({exc.strerror})"
        if st.st_uid not in trusted_owners:
            return f"{here} belongs to uid {st.st_uid}"
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_LINKS:
                return f"{here} is a loop of symlinks"
            target = os.readlink(here)
            pending += reversed(Path(target).parts[1:] if target.startswith("/") else Path(target).parts)
            here = Path("/") if target.startswith("/") else here.parent
            continue
        if not stat.S_ISDIR(st.st_mode):
            return None  # not a directory: writing under it fails with its own error
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return f"{here} is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
        if not pending:
            return None
        name = pending.pop()
        here = here.parent if name == ".." else here if name == "." else here / name
        if not os.path.lexists(here):
            return None

"""Fetching a backup's control-plane archive and putting its files back, old ones moved aside.

The archive is first extracted into a staging dir inside lifeboat's work dir; then each file
is copied beside its destination and renamed over it, so every destination changes in one
step and an existing file is first renamed to ``<path>.lifeboat-moved-<stamp>`` (in the kubelet's
manifests dir ``.<name>.lifeboat-moved-<stamp>``, which it does not run). A static-pod manifest
whose component is held stopped goes to the holding dir instead, so the kubelet does not start
it before the restore says so.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from lifeboat.catalog.age_keys import Identity
from lifeboat.catalog.codec import decode
from lifeboat.catalog.layout import FILES_OBJECT
from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.streams import private_file
from lifeboat.catalog.repository import BackupRepository
from lifeboat.durable import fsync_dir, install_durably, part_path, rename_no_replace
from lifeboat.errors import IntegrityError, OperationFailed
from lifeboat.catalog.file_archive import extract_archive, verify_archive
from lifeboat.kube.paths import MANIFESTS_DIR, on_host
from lifeboat.restore.file_policy import refuse_unrestorable


def fetch_archive(repo: BackupRepository, manifest: Manifest,
                  identities: Sequence[Identity] | None, dest: Path) -> None:
    """Download and decode the archive to ``dest``; IntegrityError unless every file matches."""
    stored = manifest.object_named(FILES_OBJECT)
    if stored is None:
        raise OperationFailed(f"backup {manifest.id} holds no control-plane files (taken with --no-files); "
                              "restore without --files")
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    chunks = repo.read_object(manifest, stored.name)
    # Only a checked archive is put at ``dest``, durably: the journal then says fetch-files is done,
    # and a resumed restore installs what ``dest`` holds without checking it again.
    part = part_path(dest)
    try:
        try:
            with private_file(part) as out:
                for chunk in decode(chunks, identities if manifest.encryption else None):
                    out.write(chunk)
        except IntegrityError as exc:
            raise IntegrityError(f"object {stored.name} of backup {manifest.id} failed its check: {exc}; "
                                 "restore another backup") from None
        with part.open("rb") as archive:
            verify_archive(archive, manifest.files)
        install_durably(part, dest)
    finally:
        part.unlink(missing_ok=True)


def check_archive(archive: Path, root: Path, destination: Callable[[str], str] = lambda path: path) -> None:
    """Raise unless every file of ``archive`` may be restored under ``root`` (:mod:`.file_policy`)."""
    staging, _ = _staged(archive, root, destination)
    shutil.rmtree(staging)


def install_archive(archive: Path, root: Path, stamp: str,
                    destination: Callable[[str], str] = lambda path: path) -> list[str]:
    """Put every file of ``archive`` in place under ``root``; return the host paths written.

    Every file is checked before the first one is put in place: a refused archive changes nothing.
    """
    staging, written = _staged(archive, root, destination)
    kubelets = on_host(root, MANIFESTS_DIR)
    for host_path in written:
        target = on_host(root, destination(host_path))
        _install(staging / host_path.lstrip("/"), target, stamp, hidden_aside=target.parent == kubelets)
    shutil.rmtree(staging)
    return written


def _staged(archive: Path, root: Path, destination: Callable[[str], str]) -> tuple[Path, list[str]]:
    """Extract ``archive`` beside itself and check it; the staging dir and the host paths it holds."""
    staging = archive.with_name("control-plane-files")
    if staging.exists():
        shutil.rmtree(staging)
    try:
        with archive.open("rb") as f:
            written = extract_archive(f, staging)
        refuse_unrestorable(staging, written, root, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging, written


def _make_host_dirs(directory: Path) -> None:
    """Create missing host directories 0755 (like kubeadm's /etc/kubernetes), whatever the umask."""
    if directory.is_dir():
        return
    _make_host_dirs(directory.parent)
    try:
        os.mkdir(directory, 0o755)
    except FileExistsError:
        pass


def _install(staged: Path, target: Path, stamp: str, *, hidden_aside: bool = False) -> None:
    """Put ``staged`` at ``target``, the file there moved aside first. ``hidden_aside``: in the
    kubelet's manifests dir, where it runs every file whose name does not start with '.' (and a
    backup captures them), the aside name starts with '.'."""
    try:
        _make_host_dirs(target.parent)
        if _same_file(staged, target):
            # Nothing to put back. Moving it aside anyway cluttered every directory (the kubelet
            # reads every file of its manifests dir), and a resumed restore took a file it had
            # itself put where none was for the node's own and moved it aside.
            return
        aside = target.with_name(f"{'.' if hidden_aside else ''}{target.name}.lifeboat-moved-{stamp}")
        if os.path.lexists(target):
            try:
                rename_no_replace(target, aside)  # a rename would replace another restore's aside file
            except FileExistsError:
                if not _installed(staged, target):  # not this restore's own, put there before it was resumed
                    raise OperationFailed(f"{aside} already exists, so {target} cannot be moved aside; nothing of "
                                          "it was changed; move that file away, then re-run the restore") from None
        temporary = target.with_name(f".{target.name}.lifeboat-new")
        if os.path.lexists(temporary):
            os.unlink(temporary)
        if staged.is_symlink():
            os.symlink(os.readlink(staged), temporary)
            os.replace(temporary, target)
            fsync_dir(target.parent)  # the move aside and the new name
        else:
            shutil.copy2(staged, temporary)
            st = staged.stat()
            if os.geteuid() == 0:
                os.chown(temporary, st.st_uid, st.st_gid)
            # Never set-id or sticky: an archive is not signed, so it may be forged (file_policy).
            os.chmod(temporary, stat.S_IMODE(st.st_mode) & 0o777)
            # Its bytes on disk before its name, and both names after: a power cut never leaves
            # a certificate or manifest empty at its path, nor the move aside undone.
            install_durably(temporary, target)
    except OSError as exc:
        raise OperationFailed(f"cannot put {target} in place: {exc.strerror or exc}; "
                              "fix that path and re-run the restore") from None


def _same_file(staged: Path, target: Path) -> bool:
    """Whether ``target`` is what ``_install`` would make of ``staged``: content, mode and owner."""
    if not _installed(staged, target):
        return False
    if staged.is_symlink():
        return True
    ours, theirs = staged.stat(), os.lstat(target)
    owner_kept = os.geteuid() != 0 or (ours.st_uid, ours.st_gid) == (theirs.st_uid, theirs.st_gid)
    return owner_kept and stat.S_IMODE(ours.st_mode) & 0o777 == stat.S_IMODE(theirs.st_mode)


def _installed(staged: Path, target: Path) -> bool:
    """Whether ``target`` is already what ``_install`` puts there from ``staged``."""
    if staged.is_symlink() or target.is_symlink():
        return staged.is_symlink() and target.is_symlink() and os.readlink(staged) == os.readlink(target)
    return target.is_file() and filecmp.cmp(staged, target, shallow=False)

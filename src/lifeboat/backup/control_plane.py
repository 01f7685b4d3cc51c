"""A backup's control-plane files: Kubernetes says which, the catalog's archive holds them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import BinaryIO

from lifeboat.catalog.file_archive import CapturedFile, archive_files, read_files
from lifeboat.kube.control_plane_files import control_plane_paths, holds_private_key

_log = logging.getLogger(__name__)

# kubeadm's files are a few KiB; a CA bundle with every public root is under 1 MiB.
LARGE_FILE = 16 << 20


def collect(root: Path) -> list[CapturedFile]:
    """Stat and hash every control-plane file under ``root``; empty on a non-kubeadm host."""
    return read_files(root, control_plane_paths(root))


def capture(root: Path, out: BinaryIO) -> list[CapturedFile]:
    """Find the control-plane files and archive them to ``out``, reading each file once.

    A private key that every user of the host can read, and a file far larger than any
    certificate, key, kubeconfig or manifest, are captured as they are, each with a warning.
    """
    entries = archive_files(root, control_plane_paths(root), out)
    for entry in entries:
        if entry.kind == "file" and entry.mode & 0o004 and holds_private_key(entry.path):
            _log.warning("control-plane file %s holds a private key and every user of this host can read it "
                         "(mode %04o); captured as it is, and a restore puts it back so: chmod 600 it",
                         entry.path, entry.mode)
        if entry.kind == "file" and entry.size > LARGE_FILE:
            _log.warning("control-plane file %s is %d MiB, far more than a certificate, key, kubeconfig or "
                         "manifest takes: captured, but every backup stores it; if it does not belong there, "
                         "move it out of the tree", entry.path, entry.size >> 20)
    return entries

"""A backup's control-plane files: Kubernetes says which, the catalog's archive holds them."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from lifeboat.catalog.file_archive import CapturedFile, archive_files, read_files
from lifeboat.kube.control_plane_files import control_plane_paths


def collect(root: Path) -> list[CapturedFile]:
    """Stat and hash every control-plane file under ``root``; empty on a non-kubeadm host."""
    return read_files(root, control_plane_paths(root))


def capture(root: Path, out: BinaryIO) -> list[CapturedFile]:
    """Find the control-plane files and archive them to ``out``, reading each file once."""
    return archive_files(root, control_plane_paths(root), out)

"""A temp dir that fills up while the control-plane archive is spooled is a clear failure."""

from __future__ import annotations

import errno
import io
from pathlib import Path
from typing import BinaryIO

import pytest

from lifeboat.backup.pipeline import BackupOptions, take_backup
from lifeboat.catalog.layout import MARKER_KEY
from lifeboat.catalog.repository import BackupRepository
from lifeboat.errors import OperationFailed
from lifeboat.etcd.memory import member_urls
from lifeboat.store.memory import MemoryStore
from tests.support.kubeadm_node import make_kubeadm_node
from tests.unit.capture.test_capture_loop import SnapshottingEtcd
from tests.unit.snapshot.test_bbolt_synthetic import build as build_db


class _FullDisk(io.BytesIO):
    def write(self, data: object) -> int:  # type: ignore[override]
        raise OSError(errno.ENOSPC, "No space left on device")


def test_temp_dir_filling_up_while_the_control_plane_files_are_archived_is_a_clear_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot's spool said "temp dir is full" (exit 1); the archive's let OSError through:
    "unexpected error (a bug: please report it)", exit 4."""
    import lifeboat.backup.pipeline as pipeline

    real_private_file = pipeline.private_file

    def archive_on_a_full_disk(path: Path) -> BinaryIO:
        return _FullDisk() if path.name == "control-plane.tar" else real_private_file(path)

    monkeypatch.setattr(pipeline, "private_file", archive_on_a_full_disk)
    node = make_kubeadm_node(tmp_path / "node")
    repo = BackupRepository.open(MemoryStore(), create=True)
    etcd = SnapshottingEtcd(build_db(tmp_path / "base.db", [4]))
    options = BackupOptions(cluster="prod", endpoints=(member_urls(1)[0],), root=node.root, tmp_dir=tmp_path)
    with pytest.raises(OperationFailed, match=f"temp dir {tmp_path} is full"):
        take_backup(etcd, repo, options)
    assert [obj.key for obj in repo.store.list()] == [MARKER_KEY]  # the uploaded snapshot was removed

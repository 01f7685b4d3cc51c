"""A backup whose id another backup already committed fails with its own error, and leaves that one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeboat.backup.pipeline import BackupOptions, take_backup
from lifeboat.catalog.repository import BackupRepository
from lifeboat.errors import OperationFailed
from lifeboat.etcd.memory import member_urls
from lifeboat.store.memory import MemoryStore
from tests.unit.capture.test_capture_loop import SnapshottingEtcd
from tests.unit.snapshot.test_bbolt_synthetic import build as build_db


class _BreakingEtcd(SnapshottingEtcd):
    def snapshot(self, endpoint: str) -> Iterator[bytes]:
        yield b"x" * 4096
        raise OperationFailed("snapshot from etcd: the stream ended before etcd finished it; retry")


def test_a_failure_before_the_manifest_under_an_id_already_committed_is_reported_as_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two backups in the same second drawing the same id (1 in 16.7 million): the second one's
    failure found the first one's manifest while cleaning up and died of an UnboundLocalError."""
    repo = BackupRepository.open(MemoryStore(), create=True)
    options = BackupOptions(cluster="prod", endpoints=(member_urls(1)[0],), capture_files=False, tmp_dir=tmp_path)
    first = take_backup(SnapshottingEtcd(build_db(tmp_path / "base.db", [4])), repo, options)
    monkeypatch.setattr("lifeboat.backup.pipeline.new_backup_id", lambda started: first.id)
    with pytest.raises(OperationFailed, match="the stream ended before etcd finished it"):
        take_backup(_BreakingEtcd(tmp_path / "base.db"), repo, options)
    assert repo.find(first.id) == first

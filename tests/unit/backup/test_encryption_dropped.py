"""A backup that is not encrypted while the previous one of its cluster was is warned about."""

from __future__ import annotations

from pathlib import Path

import pyrage
import pytest

from lifeboat.backup.pipeline import BackupOptions, take_backup
from lifeboat.catalog.age_keys import load_recipients
from lifeboat.catalog.repository import BackupRepository
from lifeboat.etcd.memory import member_urls
from lifeboat.store.memory import MemoryStore
from tests.unit.capture.test_capture_loop import SnapshottingEtcd
from tests.unit.snapshot.test_bbolt_synthetic import build as build_db


def test_a_backup_without_the_encryption_of_the_previous_one_is_warned_about(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A cron line or config that lost its --encrypt-to stored every later backup, Secrets
    included, in clear, without a word (capture now starts a new chain for it)."""
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    repo = BackupRepository.open(MemoryStore(), create=True)
    etcd = SnapshottingEtcd(build_db(tmp_path / "base.db", [4]))
    plain = BackupOptions(cluster="prod", endpoints=(member_urls(1)[0],), capture_files=False, tmp_dir=tmp_path)
    encrypted = BackupOptions(cluster="prod", endpoints=plain.endpoints, capture_files=False, tmp_dir=tmp_path,
                              recipients=tuple(load_recipients([recipient])))
    with caplog.at_level("WARNING", logger="lifeboat.backup.pipeline"):
        take_backup(etcd, repo, plain)
        first = take_backup(etcd, repo, encrypted)
        take_backup(etcd, repo, encrypted)
        assert "not encrypted" not in caplog.text, "nothing to warn about yet"
        dropped = take_backup(etcd, repo, plain)
    assert f"backup {dropped.id} is not encrypted" in caplog.text
    assert recipient in caplog.text and "--encrypt-to" in caplog.text
    assert caplog.text.count("is not encrypted") == 1 and first.id not in caplog.text

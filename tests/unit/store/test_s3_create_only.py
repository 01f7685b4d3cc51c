"""A store that ignores ``If-None-Match: *`` is found out before lifeboat relies on it.

Before, such a store (some S3-compatible ones) silently overwrote: a manifest or a capture
segment written "create-only" could replace another writer's, and nothing said so. The server
is a real HTTP server on loopback (tests/support/fake_s3.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeboat.catalog.repository import BackupRepository
from lifeboat.errors import AlreadyExists, UsageError
from lifeboat.store.base import PROBE_FOLDER
from lifeboat.store.pace import Pace
from tests.support.fake_s3 import FakeS3, fake_s3

PACE = Pace(min_rate=8 << 20, allowance=5.0, idle=5.0)


@pytest.fixture
def fake() -> Iterator[FakeS3]:
    with fake_s3() as server:
        yield server


def probe_writes(fake: FakeS3) -> int:
    return sum(1 for method, path in fake.requests if method == "PUT" and PROBE_FOLDER in path)


def test_create_only_writes_to_a_store_that_overwrites_anyway_are_refused_and_leave_nothing(fake: FakeS3) -> None:
    fake.honour_if_none_match = False
    fake.put("prefix/clusters/prod/manifests/one.json", b"the first writer's")
    store = fake.store(PACE, "prefix")

    with pytest.raises(UsageError) as refused:
        store.put_bytes("clusters/prod/manifests/one.json", b"a second writer's", create_only=True)

    message = str(refused.value)
    assert "ignores If-None-Match" in message and fake.endpoint in message and "\n" not in message
    assert fake.objects["prefix/clusters/prod/manifests/one.json"][0] == b"the first writer's"
    assert list(fake.objects) == ["prefix/clusters/prod/manifests/one.json"], "the probe is removed"
    with pytest.raises(UsageError):
        store.put_bytes("clusters/prod/manifests/two.json", b"x", create_only=True)
    assert probe_writes(fake) == 2, "probed once per store"
    store.put_bytes("clusters/prod/heartbeat.json", b"plain writes go on")
    assert store.get_bytes("clusters/prod/manifests/one.json") == b"the first writer's"


def test_a_repository_is_not_created_in_a_store_that_overwrites_create_only_writes(fake: FakeS3) -> None:
    fake.honour_if_none_match = False

    with pytest.raises(UsageError, match="ignores If-None-Match"):
        BackupRepository.open(fake.store(PACE), create=True)
    assert fake.objects == {}


def test_a_store_that_honours_if_none_match_is_probed_once_and_refuses_a_second_write(fake: FakeS3) -> None:
    store = fake.store(PACE)
    BackupRepository.open(store, create=True)  # the marker: the first create-only write
    store.put_bytes("clusters/prod/manifests/one.json", b"first", create_only=True)

    with pytest.raises(AlreadyExists):
        store.put_bytes("clusters/prod/manifests/one.json", b"second", create_only=True)
    assert store.get_bytes("clusters/prod/manifests/one.json") == b"first"
    assert probe_writes(fake) == 2
    assert sorted(fake.objects) == ["clusters/prod/manifests/one.json", "lifeboat-repository.json"]


def test_a_probe_left_behind_does_not_make_an_empty_location_look_taken(fake: FakeS3) -> None:
    """A probe whose removal failed (the store went away between two requests) is no repository content."""
    fake.put(f"{PROBE_FOLDER}create-only-0123456789abcdef", b"first")

    BackupRepository.open(fake.store(PACE), create=True)
    assert "lifeboat-repository.json" in fake.objects


def test_credentials_that_may_not_write_the_probe_keep_working_with_a_warning(
        fake: FakeS3, caplog: pytest.LogCaptureFixture) -> None:
    """A policy allowing writes under clusters/* only: the probe (this change) must not stop backups."""
    fake.deny_under = f"p/{PROBE_FOLDER}"
    store = fake.store(PACE, "p")

    with caplog.at_level("WARNING", logger="lifeboat.store"):
        store.put_bytes("clusters/prod/manifests/one.json", b"first", create_only=True)
    with pytest.raises(AlreadyExists):
        store.put_bytes("clusters/prod/manifests/one.json", b"second", create_only=True)

    (warning,) = [r.getMessage() for r in caplog.records if "If-None-Match" in r.getMessage()]
    assert "was denied" in warning and f"p/{PROBE_FOLDER}*" in warning
    assert probe_writes(fake) == 1


def test_a_backup_into_a_store_that_overwrites_is_refused_before_it_uploads_anything(
        fake: FakeS3, tmp_path: Path) -> None:
    """The manifest is the first create-only write of a backup: found out only there, the store
    had first taken the whole snapshot, then the backup failed and removed it."""
    from lifeboat.backup.pipeline import BackupOptions, take_backup
    from lifeboat.etcd.memory import member_urls
    from tests.unit.capture.test_capture_loop import SnapshottingEtcd
    from tests.unit.snapshot.test_bbolt_synthetic import build as build_db

    fake.put("lifeboat-repository.json", b'{"format": "lifeboat-repository", "version": 2}')
    fake.honour_if_none_match = False
    repo = BackupRepository.open(fake.store(PACE))
    options = BackupOptions(cluster="prod", endpoints=(member_urls(1)[0],), capture_files=False, tmp_dir=tmp_path)

    with pytest.raises(UsageError, match="ignores If-None-Match"):
        take_backup(SnapshottingEtcd(build_db(tmp_path / "base.db", [4])), repo, options)
    assert [path for method, path in fake.requests if method == "PUT" and "/clusters/" in path] == []

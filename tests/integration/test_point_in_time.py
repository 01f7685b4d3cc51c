"""Point-in-time recovery against real etcd: the oracle is etcd's own Range at each revision."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifeboat.catalog.repository import BackupRepository
from lifeboat.etcd import ConnectionSettings, EtcdClient
from lifeboat.pitr import PointTarget, build_point_snapshot, find_point
from lifeboat.snapshot import iter_latest, snapshot_status
from lifeboat.store import open_store
from tests.support.binaries import EtcdRelease
from tests.support.capture_workload import capture_options, capturing, wait_for, write_history
from tests.support.etcd import EtcdCluster, EtcdMember

pytestmark = pytest.mark.integration


@pytest.fixture
def etcd(release: EtcdRelease, tmp_path: Path) -> Iterator[EtcdMember]:
    with EtcdCluster(release, tmp_path / "etcd") as cluster:
        yield cluster.first()


@pytest.fixture
def client(etcd: EtcdMember) -> Iterator[EtcdClient]:
    with EtcdClient(ConnectionSettings((etcd.client_url,))) as c:
        yield c


def source_state(client: EtcdClient, revision: int) -> list[tuple[bytes, bytes, int, int, int, int]]:
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
            for kv in client.range_all(b"", prefix=True, revision=revision)]


def restored_state(path: Path) -> list[tuple[bytes, bytes, int, int, int, int]]:
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
            for kv in iter_latest(path)]


def test_restore_to_each_revision_equals_etcds_own_range_at_that_revision(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path) -> None:
    repo = BackupRepository.open(open_store(str(tmp_path / "repo"), dict(os.environ)), create=True)
    client.put("/registry/before/base", b"in the base")
    with capturing(client, repo, capture_options("prod", etcd.client_url, tmp_path / "spool",
                                                 flush_interval=0.2)) as status:
        wait_for(lambda: status.chain is not None)
        early = write_history(client, 4, tag="early")
        time.sleep(0.5)
        late = write_history(client, 4, tag="late")
        wait_for(lambda: status.last_revision >= late.revisions[-1])
    base = status.last_revision - len(early.revisions) - len(late.revisions)
    chosen = sorted({early.revisions[0], early.revisions[3], early.revisions[-1], late.revisions[2],
                     late.revisions[4], late.revisions[-1]})
    for revision in chosen:
        point = find_point(repo, "prod", PointTarget(revision=revision), None)
        built = build_point_snapshot(repo, point, None, tmp_path / f"at-{revision}.db")
        assert snapshot_status(built.path).revision == revision
        assert restored_state(built.path) == source_state(client, revision), f"state differs at {revision}"
    assert base > 0

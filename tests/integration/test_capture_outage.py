"""Capture while the object store (a real SeaweedFS) is down: the bounded spool, then catch-up."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeboat.catalog.chains import ChainStore
from lifeboat.catalog.repository import BackupRepository
from lifeboat.etcd import ConnectionSettings, EtcdClient
from lifeboat.store import open_store
from tests.integration.test_capture import captured_events, etcd_events
from tests.support.binaries import weed
from tests.support.capture_workload import capture_options, capturing, wait_for, write_history
from tests.support.etcd import EtcdMember
from tests.support.seaweed import SeaweedServer

# The shared ``etcd`` fixture (integration/conftest.py), on etcd 3.5 only: each test takes minutes.
pytestmark = [pytest.mark.integration, pytest.mark.parametrize("release", ["3.5"], indirect=True)]

OUTAGE = 60.0  # the "object store down for a minute"


@pytest.fixture
def seaweed(tmp_path: Path) -> Iterator[SeaweedServer]:
    """A SeaweedFS of this test's own: the test stops and restarts it."""
    with SeaweedServer(weed(), tmp_path / "seaweed") as server:
        yield server


def open_repo(server: SeaweedServer) -> BackupRepository:
    s3 = server.s3()
    return BackupRepository.open(open_store(f"s3://{s3.bucket}/outage", s3.env()), create=True)


def test_an_object_store_down_for_a_minute_spools_segments_and_catches_up_without_a_gap(
        etcd: EtcdMember, seaweed: SeaweedServer, tmp_path: Path) -> None:
    repo = open_repo(seaweed)
    options = capture_options("prod", etcd.client_url, tmp_path / "spool", flush_interval=0.2)
    with EtcdClient(ConnectionSettings((etcd.client_url,))) as client, capturing(client, repo, options) as status:
        wait_for(lambda: status.chain is not None, timeout=60)
        before = write_history(client, 2, tag="before")
        wait_for(lambda: status.last_revision >= before.revisions[-1])
        seaweed.stop()
        down_until = time.monotonic() + OUTAGE
        during = []
        while time.monotonic() < down_until:
            during.extend(write_history(client, 1, tag=f"down{len(during)}").revisions)
            time.sleep(2)
        wait_for(lambda: status.spooled > 0, timeout=60)
        assert any("spooling" in e for e in status.errors)
        seaweed.start()
        after = write_history(client, 2, tag="after")
        wait_for(lambda: status.spooled == 0 and status.last_revision >= after.revisions[-1], timeout=120)
        assert status.bases == 1 and status.gaps == 0
        assert [p.name for p in (tmp_path / "spool" / "prod").iterdir()] == [".lock"]
        (chain,) = ChainStore(repo.store).chains("prod")
        assert chain.gap is None
        ranges = [(s.first_revision, s.last_revision) for s in chain.segments]
        assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:])), ranges
        assert captured_events(repo, "prod") == etcd_events(client, chain.info.base_revision, after.revisions[-1])


def test_a_full_spool_while_the_object_store_is_down_records_a_gap_and_starts_a_new_chain(
        etcd: EtcdMember, seaweed: SeaweedServer, tmp_path: Path) -> None:
    repo = open_repo(seaweed)
    options = capture_options("prod", etcd.client_url, tmp_path / "spool", flush_interval=0.2,
                              spool_max_bytes=64)  # smaller than any segment: full at once
    with EtcdClient(ConnectionSettings((etcd.client_url,))) as client, capturing(client, repo, options) as status:
        wait_for(lambda: status.chain is not None, timeout=60)
        before = write_history(client, 1, tag="before")
        # In the repository, not only handed to the upload thread (what status.last_revision counts).
        wait_for(lambda: any(s.last_revision >= before.revisions[-1]
                             for c in ChainStore(repo.store).chains("prod") for s in c.segments))
        seaweed.stop()
        write_history(client, 1, tag="down")
        wait_for(lambda: any("spool" in e for e in status.errors), timeout=90)
        seaweed.start()
        wait_for(lambda: status.bases == 2, timeout=120)
        after = write_history(client, 1, tag="after")
        wait_for(lambda: status.last_revision >= after.revisions[-1], timeout=60)
    first, second = ChainStore(repo.store).chains("prod")
    assert first.gap is not None and "spool filled up" in first.gap.reason
    assert first.gap.last_revision == before.revisions[-1]
    assert second.gap is None and second.info.base_revision >= first.gap.last_revision
    left = [p.name for p in (tmp_path / "spool" / "prod").iterdir()]
    assert left == [".lock"], "nothing is kept once the chain ended"

"""`lifeboat prune` and `pin` against real etcd 3.5.1 backups in SeaweedFS S3."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lifeboat.backup.pipeline import BackupOptions, take_backup
from lifeboat.catalog.repository import BackupRepository
from lifeboat.cli.main import main
from lifeboat.clock import FakeClock
from lifeboat.etcd import ConnectionSettings, EtcdClient
from lifeboat.retention import KeepLast
from lifeboat.retention.prune import apply_prune, plan_prune
from lifeboat.store import MemoryStore, open_store
from tests.support.binaries import EtcdRelease
from tests.support.etcd import EtcdCluster, EtcdMember
from tests.support.etcd_load import load_keys, numbered

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def member(release35: EtcdRelease, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdMember]:
    with EtcdCluster(release35, tmp_path_factory.mktemp("prune")) as cluster:
        yield cluster.first()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_backup_is_timed_by_the_repository_clock_unless_told_otherwise(member: EtcdMember, tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC))
    repo = BackupRepository.open(MemoryStore(), create=True, clock=clock)
    options = BackupOptions(cluster="prod", endpoints=(member.client_url,), capture_files=False, tmp_dir=tmp_path)
    with EtcdClient(ConnectionSettings((member.client_url,))) as etcd:
        manifest = take_backup(etcd, repo, options)
    assert manifest.id.startswith("20260304T050607Z-")
    assert (manifest.started_at, manifest.finished_at) == ("2026-03-04T05:06:07.000Z", "2026-03-04T05:06:07.000Z")


def test_prune_to_keep_last_two_leaves_the_newest_two_and_the_pinned_one_verifiable(
    member: EtcdMember, s3_repo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = BackupRepository.open(open_store(s3_repo), create=True)
    start = datetime.now(UTC) - timedelta(days=5)
    ids = []
    with EtcdClient(ConnectionSettings((member.client_url,))) as etcd:
        for day in range(5):
            load_keys(etcd, numbered(f"/registry/configmaps/day{day}/cm-", 200, 512))
            options = BackupOptions(cluster="prod", endpoints=(member.client_url,), capture_files=False)
            moment = start + timedelta(days=day)
            ids.append(take_backup(etcd, repo, options, now=lambda moment=moment: moment).id)
    # A backup started two days ago that has no manifest: its snapshot was written just now (S3
    # stamps it), so it may be about to commit; only once it is older than the grace is it removed.
    orphan = (start + timedelta(days=3, hours=1)).strftime("%Y%m%dT%H%M%SZ") + "-0000aa"
    repo.store.put_bytes(f"clusters/prod/backups/{orphan}/snapshot.db.zst", b"partial upload")
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"cluster: prod\nrepository:\n  url: {s3_repo}\nretention:\n  keep-last: 2\n")

    assert run(capsys, "pin", ids[0], "--reason", "first", "--config", str(config))[0] == 0
    code, out, err = run(capsys, "prune", "--config", str(config), "--dry-run", "-o", "json")
    assert code == 0, err
    dry = json.loads(out)
    assert {d["id"]: d["verdict"] for d in dry["decisions"]} == {
        ids[4]: "keep", ids[3]: "keep", ids[2]: "delete", ids[1]: "delete", ids[0]: "keep"}
    assert [(o["id"], o["verdict"]) for o in dry["orphans"]] == [(orphan, "keep")]
    assert dry["orphans"][0]["reasons"] == ["no manifest, last written less than 24h ago: may still be uploading"]
    assert [m.id for m in repo.manifests("prod")] == ids

    code, out, err = run(capsys, "prune", "--config", str(config))
    assert code == 0, err
    assert f"deleted {ids[2]}" in out and f"removed orphan {orphan}" not in out
    assert [m.id for m in repo.manifests("prod")] == [ids[0], ids[3], ids[4]]
    left = {obj.key.split("/")[3] for obj in repo.store.list("clusters/prod/backups/")}
    assert left == {ids[0], ids[3], ids[4], orphan}
    # A day later (by S3's own stamp on the object) it is an interrupted backup's leftover.
    later = plan_prune(repo, [KeepLast(2)], datetime.now(UTC) + timedelta(hours=25), cluster="prod")
    assert [(o.orphan.backup_id, o.remove) for o in later.orphans] == [(orphan, True)]
    assert apply_prune(repo, later).orphans_removed == [orphan]
    left = {obj.key.split("/")[3] for obj in repo.store.list("clusters/prod/backups/")}
    assert left == {ids[0], ids[3], ids[4]}
    for backup_id in (ids[0], ids[3], ids[4]):
        code, _, err = run(capsys, "verify", backup_id, "--config", str(config))
        assert code == 0, err

    code, out, _ = run(capsys, "prune", "--config", str(config), "-o", "json")
    assert code == 0 and json.loads(out)["deleted"] == []

"""Reads of a SeaweedFS S3 repository with many backups cost what is asked, not what is stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.manifest_cache import CACHE_FILE, ManifestCache
from lifeboat.catalog.repository import BackupRepository
from lifeboat.cli.main import main
from lifeboat.store import open_store
from tests.support.counting_store import CountingStore
from tests.support.manifests import fake_backup
from tests.support.seaweed import S3Endpoint

pytestmark = pytest.mark.integration

COUNT = 300  # six days of backups every 30 minutes


@pytest.fixture(scope="module")
def many(seaweed: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Manifest]]]:
    """A repository in SeaweedFS with COUNT backups, the newest started 10 minutes ago."""
    mp = pytest.MonkeyPatch()
    env = seaweed.env()
    for name, value in env.items():
        mp.setenv(name, value)
    url = f"s3://{seaweed.bucket}/reads-{datetime.now(UTC):%H%M%S%f}"
    repo = BackupRepository.open(open_store(url), create=True)
    newest = datetime.now(UTC) - timedelta(minutes=10)
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda i: fake_backup(repo, newest - timedelta(minutes=30 * i)), range(COUNT)))
    yield url, sorted(made, key=lambda m: m.id)
    mp.undo()


def counting(url: str) -> tuple[BackupRepository, CountingStore]:
    store = CountingStore(open_store(url))
    return BackupRepository.open(store), store  # type: ignore[arg-type]


def test_latest_reads_one_manifest_of_hundreds(many: tuple[str, list[Manifest]]) -> None:
    url, made = many
    repo, store = counting(url)

    assert repo.find("latest") == made[-1]
    assert store.manifests_read == 1
    assert store.listed <= 2 * 48  # the last two days' manifests: one key each


def test_a_backup_by_id_is_one_manifest_read_and_no_listing_of_backups(
        many: tuple[str, list[Manifest]]) -> None:
    url, made = many
    repo, store = counting(url)

    assert repo.find(made[7].id, "prod") == made[7]
    assert repo.find(made[8].id) == made[8]
    assert store.manifests_read == 2 and store.listed == 0


def test_a_listing_of_every_backup_lists_one_key_per_backup(many: tuple[str, list[Manifest]]) -> None:
    url, made = many
    repo, store = counting(url)
    assert [b.id for b in repo.committed()] == [m.id for m in made]
    assert store.listed == COUNT  # the manifests, from one flat folder; no data object


def test_list_last_and_since_read_only_what_they_show(
        many: tuple[str, list[Manifest]], capsys: pytest.CaptureFixture[str]) -> None:
    url, made = many
    repo, store = counting(url)
    assert [m.id for m in repo.scan(last=4).backups] == [m.id for m in made[-4:]]
    assert store.manifests_read == 4
    assert store.listed <= 2 * 48  # the last two days' manifests, not all six days'
    store.listed = 0
    assert [m.id for m in repo.scan(last=150).backups] == [m.id for m in made[-150:]]
    assert store.listed <= 2 * 48 + COUNT  # two days were too few: then forty (all six)

    capsys.readouterr()
    assert main(["list", "--repo", url, "--since", "2h", "-o", "json"]) == 0
    assert [b["id"] for b in json.loads(capsys.readouterr().out)] == [m.id for m in made[-4:]]
    assert main(["list", "--repo", url, "-o", "json"]) == 0
    assert [b["id"] for b in json.loads(capsys.readouterr().out)] == [m.id for m in made]


def test_a_damaged_manifest_among_hundreds_is_listed_as_damaged_and_passed_over_by_latest(
        seaweed: S3Endpoint, s3_repo: str) -> None:
    repo = BackupRepository.open(open_store(s3_repo), create=True)
    newest = datetime.now(UTC) - timedelta(minutes=5)
    made = [fake_backup(repo, newest - timedelta(minutes=30 * i)) for i in reversed(range(12))]
    key = repo.manifest_key(made[-1])
    repo.store.delete(key)
    repo.store.put_bytes(key, made[-1].to_json()[:100])

    listing = repo.scan()
    assert [d.id for d in listing.damaged] == [made[-1].id] and "not valid JSON" in listing.damaged[0].reason
    assert [m.id for m in listing.backups] == [m.id for m in made[:-1]]
    assert repo.find("latest") == made[-2]


def test_list_takes_manifests_from_the_cache_but_backups_from_the_live_listing(
        seaweed: S3Endpoint, s3_repo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = BackupRepository.open(open_store(s3_repo), create=True)
    newest = datetime.now(UTC) - timedelta(minutes=5)
    made = sorted((fake_backup(repo, newest - timedelta(minutes=30 * i), files=3) for i in range(40)),
                  key=lambda m: m.id)
    cache_dir = tmp_path / "cache"

    def listed(*flags: str) -> list[str]:
        capsys.readouterr()
        assert main(["list", "--repo", s3_repo, "--cache-dir", str(cache_dir), "-o", "json", *flags]) == 0
        return [b["id"] if b["status"] != "damaged" else f"damaged {b['id']}"
                for b in json.loads(capsys.readouterr().out)]

    assert listed("--no-cache") == [m.id for m in made]
    assert not cache_dir.exists()
    assert listed() == [m.id for m in made]
    assert (cache_dir / CACHE_FILE).stat().st_mode & 0o077 == 0

    store = CountingStore(open_store(s3_repo))
    cached = BackupRepository.open(store, cache=ManifestCache(cache_dir, store.url))  # type: ignore[arg-type]
    assert cached.scan().backups == tuple(made)
    assert store.manifests_read == 0

    # A deleted backup, a manifest replaced by another of the same size, one damaged since.
    repo.delete(made[0])
    replaced = made[1].model_copy(update={"tool_version": "zzzz"})
    key = repo.manifest_key(made[1])
    assert len(replaced.to_json()) == len(repo.store.get_bytes(key))
    repo.store.delete(key)
    repo.store.put_bytes(key, replaced.to_json())
    damaged = repo.manifest_key(made[2])
    repo.store.delete(damaged)
    repo.store.put_bytes(damaged, made[2].to_json()[:-40])

    shown = cached.scan()
    assert store.manifests_read == 2  # the replaced one and the damaged one
    assert [m.id for m in shown.backups] == [m.id for m in made[1:] if m != made[2]]
    assert shown.backups[0].tool_version == "zzzz"
    assert [d.id for d in shown.damaged] == [made[2].id]
    assert listed() == [m.id for m in made[1:] if m != made[2]] + [f"damaged {made[2].id}"]

"""Faults during a backup never leave anything that looks like a backup."""

from __future__ import annotations

import errno
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lifeboat.backup.pipeline import BackupOptions, take_backup
from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.repository import BackupRepository
from lifeboat.errors import EtcdUnavailable, IntegrityError, OperationFailed, RepositoryUnavailable
from lifeboat.etcd import ConnectionSettings, EtcdClient
from lifeboat.etcdapi.model import Alarm, MemberList, MemberStatus
from lifeboat.store import open_store
from lifeboat.store.memory import Fault, MemoryStore
from tests.support.binaries import EtcdRelease
from tests.support.cli import Cli
from tests.support.etcd import EtcdCluster, EtcdMember
from tests.support.etcd_load import load_keys, numbered

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def member(release35: EtcdRelease, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdMember]:
    with EtcdCluster(release35, tmp_path_factory.mktemp("faults")) as cluster:
        m = cluster.first()
        with EtcdClient(ConnectionSettings((m.client_url,))) as client:
            load_keys(client, numbered("/registry/configmaps/ns/cm-", 2000, 2048))
        yield m


@pytest.fixture
def client(member: EtcdMember) -> Iterator[EtcdClient]:
    with EtcdClient(ConnectionSettings((member.client_url,))) as c:
        yield c


def options(member: EtcdMember, **kw: object) -> BackupOptions:
    return BackupOptions(cluster="c", endpoints=(member.client_url,), capture_files=False, **kw)  # type: ignore[arg-type]


def test_upload_failing_midway_leaves_no_manifest_and_no_objects(
    client: EtcdClient, member: EtcdMember
) -> None:
    store = MemoryStore()
    repo = BackupRepository.open(store, create=True)
    store.inject(Fault("put_stream", after_bytes=64 * 1024))
    with pytest.raises(RepositoryUnavailable):
        take_backup(client, repo, options(member, zstd_level=1))
    assert store.keys() == ["lifeboat-repository.json"]
    assert list(repo.manifests()) == []


def test_manifest_write_failing_removes_the_uploaded_data(client: EtcdClient, member: EtcdMember) -> None:
    store = MemoryStore()
    repo = BackupRepository.open(store, create=True)
    store.inject(Fault("put_bytes", key_prefix="clusters/"))
    with pytest.raises(RepositoryUnavailable):
        take_backup(client, repo, options(member))
    assert store.keys() == ["lifeboat-repository.json"]


class CorruptingSource:
    """The real etcd client, except that one byte of the snapshot stream is flipped."""

    def __init__(self, client: EtcdClient, cut: bool = False) -> None:
        self.client = client
        self.cut = cut

    def member_list(self) -> MemberList:
        return self.client.member_list()

    def status(self, endpoint: str) -> MemberStatus:
        return self.client.status(endpoint)

    def alarms(self) -> list[Alarm]:
        return self.client.alarms()

    def snapshot(self, endpoint: str) -> Iterator[bytes]:
        chunks = list(self.client.snapshot(endpoint))
        if self.cut:
            yield from chunks[: len(chunks) // 2]
            return
        middle = len(chunks) // 2
        damaged = bytearray(chunks[middle])
        damaged[len(damaged) // 2] ^= 0x40
        chunks[middle] = bytes(damaged)
        yield from chunks


@pytest.mark.parametrize("cut", [False, True], ids=["corrupted", "cut-short"])
def test_snapshot_failing_etcds_own_check_is_never_stored(
    client: EtcdClient, member: EtcdMember, cut: bool
) -> None:
    store = MemoryStore()
    repo = BackupRepository.open(store, create=True)
    with pytest.raises(IntegrityError):
        take_backup(CorruptingSource(client, cut), repo, options(member))
    assert store.keys() == ["lifeboat-repository.json"]


def test_temp_dir_without_room_for_the_snapshot_is_refused_before_streaming(
    client: EtcdClient, member: EtcdMember, tmp_path: Path
) -> None:
    asked: list[Path] = []

    def tiny(path: Path) -> int:
        asked.append(path)
        return 1024

    store = MemoryStore()
    repo = BackupRepository.open(store, create=True)
    with pytest.raises(OperationFailed, match=r"spooled snapshot .* needs about \d+ MiB free in .*, which has "
                                              r"0 MiB; free space or pass --tmp-dir or set the config file's backup.tmp-dir"):
        take_backup(client, repo, options(member, tmp_dir=tmp_path), free_space=tiny)
    assert store.keys() == ["lifeboat-repository.json"]
    assert asked == [tmp_path] and list(tmp_path.iterdir()) == []


def test_disk_filling_up_while_spooling_is_a_clear_error(
    client: EtcdClient, member: EtcdMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    class FullDisk(io.FileIO):
        def write(self, data: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    real_fdopen = __import__("os").fdopen

    def fdopen(fd: int, mode: str = "r", *a: object, **k: object) -> object:
        if mode == "wb":
            return FullDisk(fd, "wb")
        return real_fdopen(fd, mode, *a, **k)

    monkeypatch.setattr("os.fdopen", fdopen)  # private_file, which the spool is written through, opens with it
    store = MemoryStore()
    repo = BackupRepository.open(store, create=True)
    with pytest.raises(OperationFailed, match=r"is full; free space or pass --tmp-dir or set the config file's "
                                              r"backup\.tmp-dir"):
        take_backup(client, repo, options(member))
    assert store.keys() == ["lifeboat-repository.json"]


@pytest.fixture(params=["local", "s3"])
def repo_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return f"file://{tmp_path / 'repo'}"
    url: str = request.getfixturevalue("s3_repo")
    return url


def before_commit(monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[Manifest], None]) -> None:
    """Run ``meanwhile`` when every object of the backup is stored, just before its manifest is written."""
    commit = BackupRepository.commit

    def commit_after(self: BackupRepository, manifest: Manifest) -> None:
        meanwhile(manifest)
        commit(self, manifest)
    monkeypatch.setattr(BackupRepository, "commit", commit_after)


def test_prune_with_a_short_grace_during_a_backup_never_leaves_a_committed_backup_without_its_snapshot(
    cli: Cli, member: EtcdMember, repo_url: str
) -> None:
    prunes: list[tuple[int, str]] = []

    def prune(manifest: Manifest) -> None:
        time.sleep(1.2)  # the backup started more than a second ago
        for grace in ("1s", "1h"):
            code, out, err = cli("prune", "--repo", repo_url, "--cluster", "c", "--keep-last", "3",
                                 "--orphan-grace", grace, "-o", "json")
            prunes.append((code, out + err))
    with pytest.MonkeyPatch.context() as patch:  # not the fixture's: it holds s3_repo's variables
        before_commit(patch, prune)
        code, out, err = cli("backup", f"--endpoints={member.client_url}", "--repo", repo_url, "--cluster", "c",
                             "--no-files", "-o", "json")

    (short_code, short), (safe_code, safe) = prunes
    assert short_code == 3 and "--orphan-grace" in short and "about to commit" in short
    assert safe_code == 0 and json.loads(safe)["orphans_removed"] == []
    assert "may still be uploading" in safe
    assert code == 0, err
    committed = json.loads(out)
    assert cli.json("verify", str(committed["id"]), "--repo", repo_url)["ok"] is True


def test_backup_whose_snapshot_vanished_before_its_manifest_fails_and_commits_nothing(
    cli: Cli, member: EtcdMember, repo_url: str
) -> None:
    store = open_store(repo_url)

    def remove_snapshot(manifest: Manifest) -> None:
        store.delete(f"clusters/{manifest.cluster}/backups/{manifest.id}/{manifest.objects[0].name}")
    with pytest.MonkeyPatch.context() as patch:
        before_commit(patch, remove_snapshot)
        code, _out, err = cli("backup", f"--endpoints={member.client_url}", "--repo", repo_url, "--cluster", "c",
                              "--no-files")
    assert code == 1 and err.count("\n") == 1
    assert "snapshot.db.zst" in err and "is missing" in err and "not committed" in err
    assert not [o.key for o in store.list("clusters/") if "/manifests/" in o.key]
    assert cli.json("list", "--repo", repo_url) == []


def test_a_backup_of_another_etcd_cluster_under_the_same_name_is_warned_about(
        client: EtcdClient, member: EtcdMember, release35: EtcdRelease, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Filed under one name, two clusters' backups are one cluster's to retention: keep-last 1
    keeps the newest of either, and deletes the other's. Said when it happens (a restore also
    changes the cluster id, so it is not refused)."""
    repo = BackupRepository.open(MemoryStore(), create=True)
    with caplog.at_level("WARNING", logger="lifeboat.backup.pipeline"):
        first = take_backup(client, repo, options(member, zstd_level=1))
        take_backup(client, repo, options(member, zstd_level=1))
        assert "etcd cluster" not in caplog.text, "the same cluster backed up again is nothing to warn about"
        with EtcdCluster(release35, tmp_path / "other") as other:
            stranger = other.first()
            with EtcdClient(ConnectionSettings((stranger.client_url,))) as other_client:
                foreign = take_backup(other_client, repo, options(stranger, zstd_level=1))
    assert foreign.source.cluster_id != first.source.cluster_id
    assert (f"backup {foreign.id} is of etcd cluster {foreign.source.cluster_id}" in caplog.text
            and f"of etcd cluster {first.source.cluster_id}" in caplog.text and "a cluster name of its own" in caplog.text)


def test_a_backup_started_before_the_newest_one_says_this_hosts_clock_is_behind(
        client: EtcdClient, member: EtcdMember, caplog: pytest.LogCaptureFixture) -> None:
    """An agent taking over on a host whose clock is behind files its backups before the
    previous leader's: `latest` and keep-last, which go by start time, then take the older
    state for the newer. Nothing said so."""
    from datetime import UTC, datetime, timedelta

    repo = BackupRepository.open(MemoryStore(), create=True)
    newest = take_backup(client, repo, options(member, zstd_level=1))
    client.put("/registry/after", b"written after the newest backup")
    with caplog.at_level("WARNING", logger="lifeboat.backup.pipeline"):
        behind = take_backup(client, repo, options(member, zstd_level=1),
                             now=lambda: datetime.now(UTC) - timedelta(minutes=10))
    assert behind.snapshot is not None and newest.snapshot is not None
    assert behind.snapshot.revision > newest.snapshot.revision
    assert f"backup {behind.id} started before backup {newest.id}" in caplog.text, caplog.text
    assert "clock" in caplog.text and repo.latest("c").id == newest.id


def test_a_snapshot_stream_cut_by_etcd_dying_says_how_far_it_got_not_that_no_endpoint_answered(
        release35: EtcdRelease, tmp_path: Path) -> None:
    with EtcdCluster(release35, tmp_path / "dying") as cluster:
        dying = cluster.first()
        with EtcdClient(ConnectionSettings((dying.client_url,))) as client:
            load_keys(client, numbered("/registry/configmaps/ns/cm-", 6000, 4096))
            stream = client.snapshot(dying.client_url)
            next(stream)
            dying.kill()
            with pytest.raises(EtcdUnavailable) as raised:
                for _ in stream:
                    pass
    message = str(raised.value)
    assert message.startswith(f"snapshot from {dying.client_url}: etcd stopped sending after "), message
    assert "no etcd endpoint answered" not in message and "check that etcd is running and retry" in message

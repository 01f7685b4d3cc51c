"""Faults during a backup never leave anything that looks like a backup."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeboat.backup.pipeline import BackupOptions, take_backup
from lifeboat.catalog.repository import BackupRepository
from lifeboat.errors import IntegrityError, OperationFailed, RepositoryUnavailable
from lifeboat.etcd import ConnectionSettings, EtcdClient
from lifeboat.etcdapi.model import Alarm, MemberList, MemberStatus
from lifeboat.store.memory import Fault, MemoryStore
from tests.support.binaries import EtcdRelease
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
    client: EtcdClient, member: EtcdMember, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = shutil.disk_usage

    def tiny(path: object) -> object:
        usage = real(path)  # type: ignore[arg-type]
        return type(usage)(usage.total, usage.total - 1024, 1024)

    monkeypatch.setattr(shutil, "disk_usage", tiny)
    store = MemoryStore()
    repo = BackupRepository.open(store, create=True)
    with pytest.raises(OperationFailed, match="temp dir .* MiB free"):
        take_backup(client, repo, options(member, tmp_dir=tmp_path))
    assert store.keys() == ["lifeboat-repository.json"]


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

    monkeypatch.setattr("lifeboat.backup.pipeline.os.fdopen", fdopen)
    store = MemoryStore()
    repo = BackupRepository.open(store, create=True)
    with pytest.raises(OperationFailed, match="is full"):
        take_backup(client, repo, options(member))
    assert store.keys() == ["lifeboat-repository.json"]

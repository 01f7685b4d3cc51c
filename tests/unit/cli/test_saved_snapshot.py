"""``lifeboat verify --save-snapshot FILE``: FILE appears only once the snapshot is complete,
verified and on disk; a download that fails or is interrupted leaves nothing that looks complete."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest
import zstandard

from lifeboat.catalog.ids import new_backup_id
from lifeboat.catalog.manifest import BackupObject, Manifest
from lifeboat.catalog.repository import BackupRepository
from lifeboat.cli.main import main
from lifeboat.errors import EXIT_FAILED, EXIT_UNAVAILABLE, OperationFailed, RepositoryUnavailable, Terminated
from lifeboat.store.local import LocalStore
from tests.unit.catalog.test_repository import T0, manifest

RAW = bytes(range(256)) * 4096  # 1 MiB: decoded and written in more than one piece


def backup_in(root: Path) -> Manifest:
    """A committed backup in the file:// repository ``root`` whose snapshot object decodes."""
    stored = zstandard.ZstdCompressor(level=1).compress(RAW)
    repo = BackupRepository.open(LocalStore(root), create=True)
    m = manifest(new_backup_id(T0)).model_copy(update={"objects": (BackupObject(
        name="snapshot.db.zst", size=len(stored), sha256=hashlib.sha256(stored).hexdigest(),
        raw_size=len(RAW), raw_sha256=hashlib.sha256(RAW).hexdigest()),)})
    repo.store.put_bytes(repo.object_key(m, "snapshot.db.zst"), stored)
    repo.commit(m)
    return m


@pytest.mark.parametrize("interruption,code", [
    (RepositoryUnavailable("connection reset by the store"), EXIT_UNAVAILABLE),
    (OperationFailed("the store answered 500 mid-object"), EXIT_FAILED),
    (Terminated(), 143),  # SIGTERM while it downloads
], ids=["store unavailable", "store failed", "SIGTERM"])
def test_an_interrupted_download_leaves_no_file_at_the_saved_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interruption: BaseException, code: int) -> None:
    m = backup_in(tmp_path / "repo")

    def broken_stream(store: LocalStore, key: str, chunk_size: int = 4 << 20) -> Iterator[bytes]:
        whole = (store.root / key).read_bytes()
        yield whole[: len(whole) // 2]
        raise interruption

    monkeypatch.setattr(LocalStore, "get_stream", broken_stream)
    fresh, existing = tmp_path / "fresh.db", tmp_path / "existing.db"
    existing.write_bytes(b"a snapshot saved before")
    for saved in (fresh, existing):
        assert main(["verify", m.id, "--repo", str(tmp_path / "repo"), "--cluster", "prod",
                     "--save-snapshot", str(saved)]) == code
    assert not fresh.exists() and existing.read_bytes() == b"a snapshot saved before"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_a_snapshot_that_fails_verification_is_not_saved(tmp_path: Path) -> None:
    m = backup_in(tmp_path / "repo")
    saved = tmp_path / "saved.db"
    # Complete and decodable, but not etcd's snapshot: it fails the snapshot's checks.
    assert main(["verify", m.id, "--repo", str(tmp_path / "repo"), "--cluster", "prod",
                 "--save-snapshot", str(saved)]) == EXIT_FAILED
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


@pytest.mark.parametrize("target", ["directory", "no-parent", "identity-file"])
def test_a_saved_name_that_cannot_take_the_snapshot_is_refused_before_the_download(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    """A directory crashed the rename at the end (exit 4) after the whole download; the file of
    the identity that decrypts it would have been overwritten by the snapshot."""
    m = backup_in(tmp_path / "repo")
    key = tmp_path / "key.txt"
    key.write_text(str(pyrage.x25519.Identity.generate()) + "\n")
    saved = {"directory": tmp_path, "no-parent": tmp_path / "gone" / "s.db", "identity-file": key}[target]
    downloads: list[str] = []
    monkeypatch.setattr(LocalStore, "get_stream", lambda *args, **kwargs: downloads.append("read") or iter(()))
    capsys.readouterr()
    code = main(["verify", m.id, "--repo", str(tmp_path / "repo"), "--identity", str(key),
                 "--save-snapshot", str(saved)])
    err = capsys.readouterr().err
    assert code == 3 and f"--save-snapshot {saved}" in err and downloads == []
    assert key.read_text().startswith("AGE-SECRET-KEY-1")

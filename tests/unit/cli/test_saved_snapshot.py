"""``lifeboat verify --save-snapshot FILE``: FILE appears only once the snapshot is complete,
verified and on disk; a download that fails or is interrupted leaves nothing that looks complete."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest
import zstandard

from lifeboat.catalog.ids import new_backup_id
from lifeboat.catalog.manifest import BackupObject, Manifest
from lifeboat.catalog.repository import BackupRepository
from lifeboat.cli.main import main
from lifeboat.durable import part_path
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


def test_a_second_run_saving_to_the_same_file_while_one_writes_it_is_refused_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Both wrote FILE.part: the second replaced the first's half-written bytes, and either could
    rename the other's file onto FILE (or remove it under the other's feet)."""
    m = backup_in(tmp_path / "repo")
    saved = tmp_path / "saved.db"
    argv = ["verify", m.id, "--repo", str(tmp_path / "repo"), "--cluster", "prod", "--save-snapshot", str(saved)]
    second: list[tuple[int, str, bool]] = []
    real_stream = LocalStore.get_stream

    def stream_running_another(store: LocalStore, key: str, chunk_size: int = 4 << 20) -> Iterator[bytes]:
        chunks = real_stream(store, key, chunk_size)
        yield next(chunks)
        if not second:  # the first run, halfway: a second one starts on the same FILE
            capsys.readouterr()
            code = main(argv)
            second.append((code, capsys.readouterr().err, part_path(saved).exists()))
        yield from chunks

    monkeypatch.setattr(LocalStore, "get_stream", stream_running_another)
    main(argv)  # fails its snapshot check (not etcd's), as the one above
    [(code, err, part_left)] = second
    assert code == EXIT_FAILED and err.count("\n") == 1, err
    assert f"{saved} is being written by another process (pid {os.getpid()}" in err
    assert part_left  # the first run's file was left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_what_a_killed_save_left_beside_the_file_is_removed_by_the_next_run(tmp_path: Path) -> None:
    m = backup_in(tmp_path / "repo")
    saved = tmp_path / "saved.db"
    part_path(saved).write_bytes(b"half of a snapshot" * 1000)
    (tmp_path / "saved.db.part.segments").mkdir()
    (tmp_path / "saved.db.part.segments" / "000000001.segment.zst").write_bytes(b"staged")
    (tmp_path / ".saved.db.lock").write_text("12345\n")  # a dead run's lock file: no flock on it
    code = main(["verify", m.id, "--repo", str(tmp_path / "repo"), "--cluster", "prod",
                 "--save-snapshot", str(saved)])
    assert code == EXIT_FAILED  # not etcd's snapshot (see above): what matters is what is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


@pytest.mark.parametrize("target", ["/proc/self/saved.db", "/sys/kernel/saved.db"])
def test_a_saved_name_in_a_directory_that_takes_no_file_is_refused_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str) -> None:
    m = backup_in(tmp_path / "repo")
    capsys.readouterr()
    code = main(["verify", m.id, "--repo", str(tmp_path / "repo"), "--cluster", "prod", "--save-snapshot", target])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and f"cannot write {target}" in err, err

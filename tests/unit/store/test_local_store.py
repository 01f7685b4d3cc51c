"""LocalStore: atomic files, containment under the root, and OS errors translated."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeboat.errors import NotFound, OperationFailed, RepositoryUnavailable, UsageError
from lifeboat.store import LocalStore
from lifeboat.store import local as local_module
from lifeboat.store.local import TEMP_PREFIX


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    (tmp_path / "repo").mkdir()
    return LocalStore(tmp_path / "repo")


def temp_files(root: Path) -> list[Path]:
    return list(root.rglob(f"{TEMP_PREFIX}*"))


def failing_write(err: int) -> object:
    def write_all(fd: int, data: bytes) -> None:
        raise OSError(err, os.strerror(err))

    return write_all


def test_disk_full_is_an_operation_failure_that_says_so(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put_bytes("b/snap", b"previous")
    monkeypatch.setattr(local_module, "_write_all", failing_write(errno.ENOSPC))

    with pytest.raises(OperationFailed, match="disk is full") as caught:
        store.put_stream("b/snap", [b"new"])

    assert "\n" not in str(caught.value)
    monkeypatch.undo()
    assert store.get_bytes("b/snap") == b"previous"
    assert temp_files(store.root) == []


def test_quota_exceeded_is_reported_as_disk_full(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_module, "_write_all", failing_write(errno.EDQUOT))

    with pytest.raises(OperationFailed, match="disk is full"):
        store.put_bytes("k", b"x")
    assert temp_files(store.root) == []


def test_permission_denied_is_repository_unavailable(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_module, "_write_all", failing_write(errno.EACCES))

    with pytest.raises(RepositoryUnavailable, match="check ownership and mode"):
        store.put_bytes("k", b"x")


def test_an_oserror_from_the_callers_chunks_propagates_unchanged(store: LocalStore) -> None:
    failure = OSError(errno.EIO, "source disk broke")

    def source() -> Iterator[bytes]:
        yield b"x"
        raise failure

    with pytest.raises(OSError) as caught:
        store.put_stream("k", source())

    assert caught.value is failure
    assert store.stat("k") is None and temp_files(store.root) == []


def test_a_failed_write_leaves_no_directory_it_made(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # A backup that failed on a full disk left clusters/<c>/backups/<id>/ behind, empty, each attempt.
    store.put_bytes("clusters/prod/manifests/1.json", b"{}")
    monkeypatch.setattr(local_module, "_write_all", failing_write(errno.ENOSPC))

    with pytest.raises(OperationFailed, match="disk is full"):
        store.put_bytes("clusters/prod/backups/2/snapshot.db.zst", b"x")

    assert sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*")) == [
        "clusters", "clusters/prod", "clusters/prod/manifests", "clusters/prod/manifests/1.json"]


def test_a_write_whose_new_directory_is_removed_under_it_makes_it_again(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another write failing (or a delete) in the same fresh directory removes it once empty.
    real_mkstemp = local_module.tempfile.mkstemp
    removed: list[Path] = []

    def mkstemp_after_a_removal(**kwargs: object) -> tuple[int, str]:
        if not removed:
            directory = Path(str(kwargs["dir"]))
            directory.rmdir()
            removed.append(directory)
        return real_mkstemp(**kwargs)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(local_module.tempfile, "mkstemp", mkstemp_after_a_removal)
    store.put_bytes("clusters/prod/backups/3/snapshot.db.zst", b"x")

    assert removed and store.get_bytes("clusters/prod/backups/3/snapshot.db.zst") == b"x"


def test_a_symlink_inside_the_root_cannot_lead_a_key_outside(
    store: LocalStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "link").symlink_to(outside)

    with pytest.raises(UsageError, match="outside the repository"):
        store.put_bytes("link/x", b"x")

    assert list(outside.iterdir()) == []


def test_listing_ignores_temp_files_left_by_a_crash(store: LocalStore) -> None:
    store.put_bytes("b/obj", b"x")
    (store.root / "b" / f"{TEMP_PREFIX}abc123").write_bytes(b"partial")

    assert [o.key for o in store.list()] == ["b/obj"]


def test_keys_named_like_temp_files_are_refused(store: LocalStore) -> None:
    with pytest.raises(UsageError, match="reserved"):
        store.put_bytes(f"b/{TEMP_PREFIX}x", b"x")


def test_delete_removes_directories_it_empties_but_not_the_root(store: LocalStore) -> None:
    store.put_bytes("clusters/prod/backups/1/snap", b"x")
    store.put_bytes("clusters/prod/keep", b"y")

    store.delete("clusters/prod/backups/1/snap")

    assert not (store.root / "clusters" / "prod" / "backups").exists()
    assert (store.root / "clusters" / "prod" / "keep").exists()
    store.delete("clusters/prod/keep")
    assert store.root.is_dir() and list(store.root.iterdir()) == []


def test_a_key_where_a_directory_stands_is_not_an_object(store: LocalStore) -> None:
    store.put_bytes("a/b", b"x")

    assert store.stat("a") is None
    with pytest.raises(NotFound):
        store.get_bytes("a")
    store.delete("a")
    with pytest.raises(OperationFailed, match="collides"):
        store.put_bytes("a", b"y")
    assert store.get_bytes("a/b") == b"x"


def test_a_key_below_an_existing_object_collides(store: LocalStore) -> None:
    store.put_bytes("a", b"x")

    with pytest.raises(OperationFailed, match="collides"):
        store.put_bytes("a/b/c", b"y")
    assert store.get_bytes("a") == b"x" and temp_files(store.root) == []


def test_objects_are_plain_files_readable_without_lifeboat(store: LocalStore) -> None:
    store.put_stream("clusters/prod/snap.db.zst", [b"ab", b"cd"])

    assert (store.root / "clusters" / "prod" / "snap.db.zst").read_bytes() == b"abcd"


def test_reading_a_missing_root_finds_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "not-yet")

    assert list(store.list()) == [] and store.stat("k") is None
    with pytest.raises(NotFound):
        store.get_stream("k")
    assert not (tmp_path / "not-yet").exists()


def test_a_directory_that_is_not_there_is_made_by_its_top_object_only(tmp_path: Path) -> None:
    # Before, a write below a folder made the whole directory again: with the share holding the
    # repository not mounted, a running capture wrote its segments onto the mount point, where
    # the share hid them once it was back.
    share = tmp_path / "mnt"
    share.mkdir()
    store = LocalStore(share / "lifeboat")

    with pytest.raises(RepositoryUnavailable) as refused:
        store.put_bytes("clusters/prod/chains/c1/segments/0001.seg", b"x", create_only=True)
    assert "not there" in str(refused.value) and "\n" not in str(refused.value)
    assert list(share.iterdir()) == []

    store.put_bytes("lifeboat-repository.json", b"{}", create_only=True)  # creating a repository
    store.put_bytes("clusters/prod/chains/c1/segments/0001.seg", b"x", create_only=True)
    (share / "lifeboat").rename(share / "moved")
    with pytest.raises(RepositoryUnavailable):
        store.put_stream("clusters/prod/backups/1/snapshot.db.zst", [b"y"])
    assert list(share.iterdir()) == [share / "moved"]

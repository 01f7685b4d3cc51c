"""A rename that must not replace what another process put at its target, and durable installs."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest

from lifeboat import durable
from lifeboat.durable import install_durably, move_durably, part_path, rename_no_replace


def old_data(tmp_path: Path) -> Path:
    source = tmp_path / "data"
    (source / "member").mkdir(parents=True)
    (source / "member" / "db").write_bytes(b"the old member's db")
    return source


def assert_untouched(source: Path, target: Path) -> None:
    assert (source / "member" / "db").read_bytes() == b"the old member's db"
    assert target.is_dir() and list(target.iterdir()) == []


def test_a_target_made_just_before_the_rename_is_refused_not_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another process makes the name (an empty dir, which a plain rename of a directory replaces)
    # after any look lifeboat took and right before the rename itself.
    source, target = old_data(tmp_path), tmp_path / "data.lifeboat-moved-1"
    real = durable._renameat2()
    assert real is not None  # this machine's kernel and glibc have it

    def racing(*args: int | bytes) -> int:
        target.mkdir()
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(durable, "_renameat2", lambda: racing)
    with pytest.raises(FileExistsError):
        move_durably(source, target)
    assert_untouched(source, target)


@pytest.mark.parametrize("taken", ["empty dir", "dir", "file", "dangling symlink"])
def test_every_kind_of_existing_target_is_refused(tmp_path: Path, taken: str) -> None:
    source, target = old_data(tmp_path), tmp_path / "aside"
    if taken == "dangling symlink":
        target.symlink_to(tmp_path / "gone")
    elif taken == "file":
        target.write_bytes(b"someone's file")
    else:
        target.mkdir()
        if taken == "dir":
            (target / "kept").write_bytes(b"someone's file")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(FileExistsError):
        rename_no_replace(source, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (source / "member" / "db").read_bytes() == b"the old member's db"


def unsupported(code: int) -> object:
    def renameat2(*args: int | bytes) -> int:
        ctypes.set_errno(code)
        return -1
    return renameat2


@pytest.mark.parametrize("renameat2", [None, unsupported(errno.ENOSYS), unsupported(errno.EINVAL)],
                         ids=["no libc symbol", "old kernel", "filesystem without the flag"])
def test_without_renameat2_the_name_is_looked_at_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renameat2: object) -> None:
    monkeypatch.setattr(durable, "_renameat2", lambda: renameat2)
    source, target = old_data(tmp_path), tmp_path / "aside"
    target.mkdir()
    with pytest.raises(FileExistsError):
        rename_no_replace(source, target)
    assert_untouched(source, target)
    target.rmdir()
    rename_no_replace(source, target)
    assert (target / "member" / "db").read_bytes() == b"the old member's db" and not source.exists()


def test_another_failure_of_renameat2_is_raised_as_it_is(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        rename_no_replace(tmp_path / "missing", tmp_path / "aside")
    (tmp_path / "data").mkdir()
    with pytest.raises(OSError) as raised:
        rename_no_replace(tmp_path / "data", tmp_path / "data" / "inside")
    assert raised.value.errno == errno.EINVAL  # also the plain rename's answer, after the fallback


def test_a_move_syncs_both_directories_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, target = old_data(tmp_path), tmp_path / "elsewhere" / "aside"
    target.parent.mkdir()
    synced: list[tuple[Path, bool]] = []
    monkeypatch.setattr(durable, "fsync_dir", lambda d: synced.append((d, target.exists())))
    move_durably(source, target)
    assert sorted(synced) == [(tmp_path, True), (tmp_path / "elsewhere", True)]


def test_an_installed_file_is_fsynced_before_its_rename_and_its_directory_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, part = tmp_path / "saved.db", part_path(tmp_path / "saved.db")
    path.write_bytes(b"old")
    part.write_bytes(b"new")
    synced: list[tuple[str, bytes]] = []
    real = durable._fsync

    def spied(synced_path: Path, flags: int = 0) -> None:
        synced.append((synced_path.name, path.read_bytes()))
        real(synced_path, flags)

    monkeypatch.setattr(durable, "_fsync", spied)
    install_durably(part, path)
    assert synced == [("saved.db.part", b"old"), (tmp_path.name, b"new")]
    assert path.read_bytes() == b"new" and not part.exists()

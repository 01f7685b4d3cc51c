"""The restored db's bucket ``key`` is recognised as the snapshot's own pages, or not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lifeboat.errors import IntegrityError
from lifeboat.restore.content import keeps_snapshot_pages, keeps_snapshot_rows, keyspace_digest, newest_revision
from lifeboat.restore.steps import _compare_keyspace
from lifeboat.snapshot.bbolt import BoltFile
from lifeboat.snapshot.writer import bump_changes, write_db

from tests.unit.snapshot.test_page_scan import PS, build


def altered(source: Path, target: Path, page: int, at: int = PS - 1) -> Path:
    data = bytearray(source.read_bytes())
    data[page * PS + at] ^= 0xFF
    target.write_bytes(bytes(data))
    return target


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    return build(tmp_path / "snapshot.db")


def test_an_unchanged_copy_keeps_the_snapshot_pages(snapshot: Path, tmp_path: Path) -> None:
    restored = Path(shutil.copy(snapshot, tmp_path / "restored.db"))
    assert keeps_snapshot_pages(snapshot, restored)
    assert newest_revision(restored) == 8


@pytest.mark.parametrize("page", [2, 10], ids=["freelist", "free page"])
def test_changes_outside_bucket_key_keep_it(snapshot: Path, tmp_path: Path, page: int) -> None:
    assert keeps_snapshot_pages(snapshot, altered(snapshot, tmp_path / "restored.db", page))


@pytest.mark.parametrize("page", [4, 5, 6, 7, 9], ids=["branch", "leaf", "overflow", "leaf 2", "leaf 3"])
def test_a_changed_page_of_bucket_key_is_not_the_snapshot(snapshot: Path, tmp_path: Path, page: int) -> None:
    restored = altered(snapshot, tmp_path / "restored.db", page)
    assert not keeps_snapshot_pages(snapshot, restored)


def test_a_changed_row_is_also_caught_by_the_row_digest(snapshot: Path, tmp_path: Path) -> None:
    restored = altered(snapshot, tmp_path / "restored.db", 6, at=100)  # inside the 6000-byte value
    assert keyspace_digest(restored, 8) != keyspace_digest(snapshot, 8)


def test_bucket_key_moved_to_other_pages_is_compared_by_rows(snapshot: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved.db"
    build(moved, children=(9, 5, 7, 8))
    data = bytearray(moved.read_bytes())
    # The root leaf names another root page for bucket "key": the trees differ.
    key_root = data.index(b"key", 3 * PS) + 3
    data[key_root] = 5
    moved.write_bytes(bytes(data))
    assert not keeps_snapshot_pages(snapshot, moved)


def test_restore_accepts_a_db_that_kept_the_snapshot_pages(snapshot: Path, tmp_path: Path) -> None:
    restored = altered(snapshot, tmp_path / "restored.db", 10)
    _compare_keyspace(snapshot, restored, 8, None)


def test_restore_refuses_a_db_whose_rows_differ(snapshot: Path, tmp_path: Path) -> None:
    restored = altered(snapshot, tmp_path / "restored.db", 6, at=100)
    with pytest.raises(IntegrityError, match=r"keyspace differs from the snapshot's \(7 rows to revision 8"):
        _compare_keyspace(snapshot, restored, 8, None)


def test_restore_refuses_a_db_whose_newest_revision_is_not_the_backups(snapshot: Path, tmp_path: Path) -> None:
    restored = Path(shutil.copy(snapshot, tmp_path / "restored.db"))
    with pytest.raises(IntegrityError, match="newest revision is 8"):
        _compare_keyspace(snapshot, restored, 9, None)


def test_restore_with_the_snapshots_digest_compares_rows(snapshot: Path, tmp_path: Path) -> None:
    restored = altered(snapshot, tmp_path / "restored.db", 6, at=100)
    with pytest.raises(IntegrityError, match="keyspace differs"):
        _compare_keyspace(snapshot, restored, 8, keyspace_digest(snapshot, 8))


@pytest.mark.parametrize("page", [4, 7, 9], ids=["branch", "leaf 2", "leaf 3"])
def test_a_changed_page_is_found_in_any_block_of_the_comparison(snapshot: Path, tmp_path: Path, page: int,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocks of three pages: the comparison's buffers are reused, and the last block is shorter.
    monkeypatch.setattr("lifeboat.restore.content._COMPARED_BLOCK", 3 * PS)
    assert snapshot.stat().st_size % (3 * PS)
    assert keeps_snapshot_pages(snapshot, altered(snapshot, tmp_path / "same.db", 10))
    assert not keeps_snapshot_pages(snapshot, altered(snapshot, tmp_path / "restored.db", page))


def bumped(snapshot: Path, target: Path, amount: int = 1000) -> Path:
    """What lifeboat's own restore writes: the snapshot's pages, the bump's pages after them."""
    with BoltFile.open(snapshot) as db:
        _latest, changes = bump_changes(db, amount)
    write_db(snapshot, target, changes, trailer=False)
    return target


def test_a_copy_on_write_bump_keeps_the_snapshot_rows(snapshot: Path, tmp_path: Path) -> None:
    restored = bumped(snapshot, tmp_path / "restored.db")
    assert not keeps_snapshot_pages(snapshot, restored)  # the right edge of bucket 'key' is new pages
    assert keeps_snapshot_rows(snapshot, restored, 8)
    _compare_keyspace(snapshot, restored, 8, None, bump=1000)


def test_a_changed_row_in_the_bumps_new_leaf_is_caught(snapshot: Path, tmp_path: Path) -> None:
    restored = bumped(snapshot, tmp_path / "bumped.db")
    with BoltFile.open(restored) as bolt:
        key = bolt.bucket(b"key")
        assert key is not None
        leaf = bolt.branch_children(key.root, key.root * PS, 4)[-1]  # the right edge: revisions 7, 8, 1008
        assert leaf >= 11  # past the snapshot's pages
    damaged = altered(restored, tmp_path / "damaged.db", leaf, at=16 + 3 * 16 + 17 + 5)  # revision 7's value
    assert not keeps_snapshot_rows(snapshot, damaged, 8)
    with pytest.raises(IntegrityError, match="keyspace differs"):
        _compare_keyspace(snapshot, damaged, 8, None, bump=1000)


@pytest.mark.parametrize("page", [5, 7, 9], ids=["leaf", "leaf 2", "leaf 3"])
def test_a_changed_kept_page_under_a_bump_is_caught(snapshot: Path, tmp_path: Path, page: int) -> None:
    damaged = altered(bumped(snapshot, tmp_path / "bumped.db"), tmp_path / "damaged.db", page)
    assert not keeps_snapshot_rows(snapshot, damaged, 8)


def test_a_bump_to_another_revision_is_refused(snapshot: Path, tmp_path: Path) -> None:
    restored = bumped(snapshot, tmp_path / "restored.db", amount=5)
    with pytest.raises(IntegrityError, match="a bump to 13"):
        _compare_keyspace(snapshot, restored, 8, None, bump=1000)


def test_a_bump_that_rewrote_more_than_a_few_rows_is_compared_by_digest(
    snapshot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lifeboat.restore.content._MOST_ROWS_READ", 1)  # the new leaf holds 3 rows
    restored = bumped(snapshot, tmp_path / "restored.db")
    assert not keeps_snapshot_rows(snapshot, restored, 8)
    _compare_keyspace(snapshot, restored, 8, None, bump=1000)  # the rows, streamed, agree

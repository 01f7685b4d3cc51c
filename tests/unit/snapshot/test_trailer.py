"""etcd's sha256 trailer: recognised by size, verified against the database bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lifeboat.errors import IntegrityError
from lifeboat.snapshot.trailer import check_trailer, has_trailer_length


def test_trailer_is_recognised_by_etcds_size_rule() -> None:
    assert has_trailer_length(8192 + 32)
    assert not has_trailer_length(8192)
    assert not has_trailer_length(8192 + 31)
    assert not has_trailer_length(32)


def test_matching_trailer_is_accepted(tmp_path: Path) -> None:
    db = bytes(range(256)) * 16
    path = tmp_path / "snap.db"
    path.write_bytes(db + hashlib.sha256(db).digest())
    check = check_trailer(path)
    assert (check.present, check.matches, check.db_size) == (True, True, len(db))
    check.require_match(path)


def test_mismatching_trailer_is_an_integrity_error(tmp_path: Path) -> None:
    db = bytes(range(256)) * 16
    path = tmp_path / "snap.db"
    path.write_bytes(db + hashlib.sha256(db + b"x").digest())
    check = check_trailer(path)
    assert check.present and check.matches is False
    with pytest.raises(IntegrityError, match="does not match"):
        check.require_match(path)


def test_missing_trailer_fails_a_required_match(tmp_path: Path) -> None:
    path = tmp_path / "raw.db"
    path.write_bytes(b"\0" * 4096)
    check = check_trailer(path)
    assert (check.present, check.matches) == (False, None)
    with pytest.raises(IntegrityError, match="no sha256 trailer"):
        check.require_match(path)

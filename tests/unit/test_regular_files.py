"""The reader of files a user names: regular files only, small ones up to their cap."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lifeboat.errors import UsageError
from lifeboat.regular_files import open_regular, read_small


def test_a_file_of_exactly_the_cap_is_read_and_one_byte_more_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"k" * 100)
    assert read_small(path, "key file", limit=100) == b"k" * 100
    path.write_bytes(b"k" * 101)
    with pytest.raises(UsageError, match=f"^key file {path} is larger than 100 bytes; check the path$"):
        read_small(path, "key file", limit=100)


def test_a_refusal_never_shows_the_content(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"AGE-SECRET-KEY-1SECRET" * 100)
    with pytest.raises(UsageError) as refused:
        read_small(path, "identity file", limit=10)
    assert "AGE-SECRET-KEY" not in str(refused.value)


@pytest.mark.timeout(10)
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    with pytest.raises(UsageError, match="is not a regular file"):
        open_regular(path, "snapshot file")


def test_a_missing_file_is_left_to_the_caller_to_translate(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "missing", "snapshot file")
    with pytest.raises(UsageError, match="^cannot read key file .*: No such file or directory$"):
        read_small(tmp_path / "missing", "key file")

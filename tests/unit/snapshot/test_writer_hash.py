"""The writer's hash of a byte range of a file, read ahead in a thread into halves of one buffer."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lifeboat.errors import SnapshotFormatError
from lifeboat.snapshot.trailer import hash_range


@pytest.mark.parametrize("start,end,buffer_size", [
    (0, 100_000, 4096),  # many halves
    (7, 99_999, 4099),  # neither the range nor the halves aligned, an odd buffer
    (5, 2_053, 4096),  # the range fits one half
    (0, 2_049, 4096),  # one byte more than a half
    (10, 10, 4096),  # empty
    (0, 100_000, 1 << 20),  # larger than the range
])
def test_a_range_hashed_through_halves_of_a_buffer_is_the_sha256_of_its_bytes(
        tmp_path: Path, start: int, end: int, buffer_size: int) -> None:
    data = bytes(range(256)) * 400
    path = tmp_path / "f"
    path.write_bytes(data)
    digest = hashlib.sha256(b"before")
    with path.open("rb", buffering=0) as f, memoryview(bytearray(buffer_size)) as buffer:
        hash_range(digest, f, start, end, buffer)
    assert digest.hexdigest() == hashlib.sha256(b"before" + data[start:end]).hexdigest()


def test_a_file_shorter_than_the_range_is_reported_as_shrunk(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10_000)
    with path.open("rb", buffering=0) as f, memoryview(bytearray(4096)) as buffer:
        with pytest.raises(SnapshotFormatError, match="shrank"):
            hash_range(hashlib.sha256(), f, 0, 10_001, buffer)

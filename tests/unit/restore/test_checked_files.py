"""A snapshot checked as it was fetched is not read again for the same check, unless it changed."""

from __future__ import annotations

import os
from pathlib import Path

from lifeboat.restore.steps import CheckedFiles


def test_a_file_checked_in_this_run_counts_as_checked_until_it_changes(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot.db"
    snapshot.write_bytes(b"db" * 1000)
    checked = CheckedFiles()
    assert not checked.unchanged(snapshot)  # fetched by an earlier run: check it again

    checked.record(snapshot)
    assert checked.unchanged(snapshot)

    data = bytearray(snapshot.read_bytes())
    data[10] ^= 1
    snapshot.write_bytes(bytes(data))
    info = snapshot.stat()
    os.utime(snapshot, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000))  # however coarse the clock
    assert not checked.unchanged(snapshot)
    snapshot.unlink()
    assert not checked.unchanged(snapshot)

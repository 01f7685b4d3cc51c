"""A snapshot file truncated while lifeboat reads it is an error (exit 1), never a SIGBUS."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import Cli
from tests.support.etcd import EtcdMember

pytestmark = pytest.mark.integration

# Reads part of the key bucket, truncates the file under itself (what another process rewriting
# the snapshot does), and reads on. With the file mapped into memory this dies of SIGBUS.
READ_THEN_TRUNCATE = """
import os, sys
from lifeboat.errors import SnapshotFormatError
from lifeboat.snapshot.bbolt import BoltFile
path = sys.argv[1]
with BoltFile.open(path) as db:
    rows = db.items(db.bucket(b"key"), db.new_seen())
    for _ in range(10):
        next(rows)
    os.truncate(path, 3 * db.page_size)
    try:
        for _ in rows:
            pass
    except SnapshotFormatError as exc:
        print("refused:", exc)
        sys.exit(0)
print("read the whole bucket after truncation?")
sys.exit(2)
"""


@pytest.fixture(scope="module")
def snapshot_file(busy_etcd: EtcdMember, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("truncate") / "snapshot.db"
    busy_etcd.etcdctl("snapshot", "save", str(path), timeout=120)
    return path


def test_snapshot_truncated_while_read_is_a_clear_error_not_a_crash(snapshot_file: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.db"
    shutil.copyfile(snapshot_file, victim)
    done = subprocess.run([sys.executable, "-c", READ_THEN_TRUNCATE, str(victim)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stdout}{done.stderr}"
    assert "shrank while being read" in done.stdout


def test_snapshot_status_of_a_truncated_file_exits_1(cli: Cli, snapshot_file: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.db"
    shutil.copyfile(snapshot_file, victim)
    with victim.open("r+b") as f:
        f.truncate(victim.stat().st_size // 2)
    code, _out, err = cli("snapshot", "status", str(victim))
    assert code == 1 and err.count("\n") == 1, err

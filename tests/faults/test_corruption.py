"""Damaged objects in a repository: every reader reports an integrity failure that names the object."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.conftest import AgeKey, BusyBackup, flip_byte
from tests.support.cli import Cli
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("encrypted", [True, False], ids=["age", "zstd-only"])
@pytest.mark.parametrize("where", [0.5, 0.999], ids=["middle", "last-chunk"])
def test_verify_of_a_flipped_byte_is_an_integrity_failure_naming_the_object_in_json(
    cli: Cli, busy_backup: Callable[[Path, bool], BusyBackup], age_key: AgeKey, tmp_path: Path,
    encrypted: bool, where: float
) -> None:
    repo = tmp_path / "repo"
    backup = busy_backup(repo, encrypted)
    backup_id, stored = backup.id, backup.stored_snapshot
    flip_byte(stored, where)

    code, out, err = cli("verify", backup_id, "--repo", str(repo), "-i", str(age_key.identity_file), "-o", "json")

    assert code == 1, err
    report = json.loads(out)
    assert report["ok"] is False
    failed = [c for c in report["checks"] if not c["ok"]]
    assert failed[0]["name"] == f"{stored.name} stored sha256"
    assert "altered or damaged" in failed[0]["detail"]
    assert err.count("\n") == 1 and stored.name in err and "cannot write" not in err


def test_restore_of_a_flipped_byte_stops_before_the_node_naming_the_object(
    cli: Cli, busy_backup: Callable[[Path, bool], BusyBackup], age_key: AgeKey, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    backup = busy_backup(repo, True)
    backup_id, stored = backup.id, backup.stored_snapshot
    flip_byte(stored)
    data_dir = tmp_path / "node" / "etcd"
    data_dir.parent.mkdir()
    peer = f"http://127.0.0.1:{free_port()}"

    code, out, err = cli(
        "restore", backup_id, "--repo", str(repo), "-i", str(age_key.identity_file), "--supervisor", "none",
        "--data-dir", str(data_dir), "--name", "m0", "--initial-cluster", f"m0={peer}",
        "--initial-advertise-peer-urls", peer, f"--endpoints=http://127.0.0.1:{free_port()}", "-o", "json",
    )

    assert code == 1, err
    assert stored.name in err and "altered or damaged" in err and "cannot write" not in err
    assert "nothing on the node was changed" in err
    assert not data_dir.exists()
    work = data_dir.with_name("etcd.lifeboat-work")
    assert not work.exists() or not any(work.iterdir())  # no decrypted snapshot left behind

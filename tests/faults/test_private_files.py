"""Everything lifeboat writes holds the cluster's Secrets: owner-only, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import AgeKey
from tests.support.cli import Cli
from tests.support.etcd import EtcdMember

pytestmark = pytest.mark.integration


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_local_repository_is_owner_only_under_umask_000(
    cli: Cli, busy_etcd: EtcdMember, age_key: AgeKey, tmp_path: Path, umask_000: None
) -> None:
    repo = tmp_path / "repo"
    cli.json("backup", f"--endpoints={busy_etcd.client_url}", "--repo", str(repo), "--no-files",
             "--encrypt-to", age_key.recipient)

    found = {p.relative_to(tmp_path).as_posix(): mode(p) for p in [repo, *repo.rglob("*")]}
    assert len(found) >= 6  # the root, clusters/, <cluster>/, backups/, <id>/ and their objects
    wrong = {name: oct(m) for name, m in found.items()
             if m != (0o700 if (tmp_path / name).is_dir() else 0o600)}
    assert wrong == {}


def test_saved_snapshot_is_0600_under_umask_000_even_over_an_existing_file(
    cli: Cli, busy_etcd: EtcdMember, age_key: AgeKey, tmp_path: Path, umask_000: None
) -> None:
    repo = tmp_path / "repo"
    backup = cli.json("backup", f"--endpoints={busy_etcd.client_url}", "--repo", str(repo), "--no-files",
                      "--encrypt-to", age_key.recipient)
    fresh, existing = tmp_path / "fresh.db", tmp_path / "existing.db"
    existing.write_bytes(b"old")
    existing.chmod(0o644)

    for saved in (fresh, existing):
        cli.json("verify", str(backup["id"]), "--repo", str(repo), "-i", str(age_key.identity_file),
                 "--save-snapshot", str(saved))
        assert mode(saved) == 0o600
        assert saved.stat().st_size > 1 << 20

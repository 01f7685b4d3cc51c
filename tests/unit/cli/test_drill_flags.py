"""``verify --drill``'s settings: its own flags are refused without ``--drill`` (not ignored), and
the shared ones (``--tmp-dir``) come from the config file too."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifeboat.catalog.layout import MARKER_KEY
from lifeboat.catalog.repository import BackupRepository
from lifeboat.errors import OperationFailed
from lifeboat.store import open_store
from lifeboat.verify import drill
from tests.support.cli import Cli
from tests.unit.retention.test_prune import store_backup

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "repo"
    path.mkdir()
    (path / MARKER_KEY).write_text(json.dumps({"format": "lifeboat-repository", "version": 2}))
    return str(path)


@pytest.mark.parametrize("flags", [
    ["--restore-with", "lifeboat"],
    ["--restore-with", "tool"],
    ["--restore-tool", "/usr/bin/etcdutl"],
    ["--etcd-binary", "/usr/bin/etcd"],
])
def test_a_drill_flag_without_drill_is_a_usage_error(cli: Cli, repo: str, flags: list[str]) -> None:
    # `verify ID --restore-with tool` verified the backup, drilled nothing and exited 0.
    code, _out, err = cli("verify", "latest", *flags, "--repo", repo)
    assert code == 3, err
    assert err.count("\n") == 1 and flags[0] in err and "add --drill" in err, err


def test_drill_flags_name_every_one_given(cli: Cli, repo: str) -> None:
    code, _out, err = cli("verify", "latest", "--restore-tool", "etcdutl", "--etcd-binary", "etcd",
                          "--repo", repo)
    assert code == 3 and "--restore-tool" in err and "--etcd-binary" in err, err



@pytest.fixture
def drilled_in(monkeypatch: pytest.MonkeyPatch) -> list[Path | None]:
    """The temp dir each drill is asked to work in; the drill itself stops there (exit 1)."""
    asked: list[Path | None] = []

    def recording(*_args: object, tmp_dir: Path | None = None, **_kwargs: object) -> None:
        asked.append(tmp_dir)
        raise OperationFailed("stopped by the test")

    monkeypatch.setattr(drill, "run_drill", recording)
    return asked


def test_drill_works_in_the_config_files_tmp_dir(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drilled_in: list[Path | None],
) -> None:
    # verify honoured backup.tmp-dir of the config file; verify --drill ignored it (and filled
    # the system temp dir with the snapshot and its restored copy).
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "cache"))
    url = str(tmp_path / "repo")
    store_backup(BackupRepository.open(open_store(url), create=True), T0, cluster="default")
    spool, flagged = tmp_path / "spool", tmp_path / "flagged"
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"backup:\n  tmp-dir: {spool}\n")
    code, _out, err = cli("verify", "latest", "--drill", "--repo", url, "--config", str(config))
    assert code == 1 and "stopped by the test" in err, err
    code, _out, err = cli("verify", "latest", "--drill", "--repo", url, "--config", str(config),
                          "--tmp-dir", str(flagged))
    assert code == 1 and "stopped by the test" in err, err
    assert drilled_in == [spool, flagged]

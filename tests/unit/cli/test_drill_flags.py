"""``verify``'s drill-only flags are refused without ``--drill`` instead of being ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lifeboat.catalog.layout import MARKER_KEY
from tests.support.cli import Cli


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


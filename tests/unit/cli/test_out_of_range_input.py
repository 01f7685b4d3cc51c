"""Durations and times beyond what a clock can hold are usage errors (exit 3), not crashes (exit 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lifeboat.catalog.layout import MARKER_KEY
from tests.support.cli import Cli


@pytest.fixture
def repo(tmp_path: Path) -> str:
    path = tmp_path / "repo"
    path.mkdir()
    (path / MARKER_KEY).write_text(json.dumps({"format": "lifeboat-repository", "version": 2}))
    return str(path)


@pytest.mark.parametrize("args", [
    ["list", "--since", "99999999999d"],
    ["list", "--since", "999999d"],
    ["list", "--since", "0001-01-01T00:00:00+14:00"],
    ["prune", "--dry-run", "--keep-within", "999999999d"],
    ["prune", "--dry-run", "--keep-within", "99999999999d"],
    ["prune", "--dry-run", "--keep-last", "1", "--recovery-window", "99999999999d"],
    ["prune", "--dry-run", "--keep-last", "1", "--orphan-grace", "99999999999d"],
    ["verify", "--drill", "--to-time", "0001-01-01T00:00:00+14:00"],
    ["restore", "--dry-run", "--to-time", "0001-01-01T00:00:00+14:00"],
])
def test_a_duration_or_time_out_of_range_is_a_usage_error(
    cli: Cli, repo: str, args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(Path(repo).parent / "cache"))
    code, _out, err = cli(*args, "--repo", repo)
    assert code == 3, err
    assert err.count("\n") == 1 and "unexpected" not in err


def test_ages_within_a_century_still_list(cli: Cli, repo: str) -> None:
    for since in ("36h", "520w", "2026-11-22", "0001-01-01T00:00:00-01:00"):
        code, _out, err = cli("list", "--since", since, "--repo", repo, "--no-cache")
        assert code == 0, err


@pytest.mark.parametrize(("flag", "command"), [
    ("--wait-timeout", ["restore", "latest", "--dry-run"]),
    ("--timeout", ["member", "replace", "m1", "--dry-run"]),
    ("--command-timeout", ["backup"]),
])
@pytest.mark.parametrize("value", ["nan", "inf", "0", "-5"])
def test_a_timeout_that_is_no_positive_number_is_refused_before_anything_runs(
    cli: Cli, repo: str, flag: str, command: list[str], value: str
) -> None:
    # A restore took --wait-timeout -5 and only failed (and rolled back) once etcd was restored.
    code, _out, err = cli(*command, flag, value, "--repo", repo)
    assert code == 3 and f"argument {flag}: must be more than 0 seconds" in err, err


@pytest.mark.parametrize("flag", ["--min-age", "--delete-after"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e12", "soon"])
def test_a_pack_wait_that_is_no_number_of_seconds_from_zero_is_refused(cli: Cli, repo: str, flag: str,
                                                                       value: str) -> None:
    code, _out, err = cli("pack", flag, value, "--repo", repo)
    assert code == 3 and f"argument {flag}: " in err and err.count("\n") <= 5, err


def test_pack_waits_of_zero_are_taken(cli: Cli, repo: str) -> None:
    code, out, err = cli("pack", "--min-age", "0", "--delete-after", "0s", "--cluster", "prod", "--repo", repo)
    assert code == 0 and "packed 0 capture segment(s) into 0" in out, err


def test_pack_waits_default_to_the_config_s_and_a_flag_overrides_it(cli: Cli, repo: str, tmp_path: Path) -> None:
    config = tmp_path / "lifeboat.yaml"
    config.write_text("capture:\n  pack-delete-after: 1h\n")
    base = ("pack", "--config", str(config), "--cluster", "prod", "--repo", repo)
    code, out, err = cli(*base)
    assert code == 0 and "wait until their pack is 3600 s old" in out, err
    code, out, err = cli(*base, "--delete-after", "60")
    assert code == 0 and "wait until their pack is 60 s old" in out, err


@pytest.mark.parametrize("flag", ["--to-revision", "--bump-revision"])
@pytest.mark.parametrize("value", ["٥٢", "５２", "5_2", " 52"])
def test_a_revision_written_other_than_in_ascii_digits_is_a_usage_error(
    cli: Cli, repo: str, flag: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python's int() reads Arabic-Indic or full-width digits, underscores and spaces: a restore
    went to (or bumped by) revision 52 when given '٥٢' or '5_2', where etcdctl refuses them."""
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(Path(repo).parent / "cache"))
    point = [] if flag == "--to-revision" else ["latest"]
    code, _out, err = cli("restore", *point, "--dry-run", flag, value, "--repo", repo)
    assert code == 3, err
    last = err.strip().splitlines()[-1]  # argparse's usage lines, then its one line of error
    assert f"{flag}: " in last and "digits 0-9" in last and "Traceback" not in err, err

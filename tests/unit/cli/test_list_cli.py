"""`lifeboat list` limited to the newest backups or a time, page by page, on a local repository."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.repository import BackupRepository
from lifeboat.cli.backups import parse_since
from lifeboat.errors import UsageError
from lifeboat.store import open_store
from tests.support.cli import Cli
from tests.unit.cli.test_prune_and_config_cli import Run, run  # noqa: F401 - the fixture
from tests.unit.cli.test_saved_snapshot import backup_in
from tests.unit.retention.test_prune import store_backup

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def hourly(tmp_path: Path) -> tuple[str, list[str]]:
    """A local repository with one backup an hour for the last 30 hours, oldest first."""
    repo = BackupRepository.open(open_store(str(tmp_path / "repo")), create=True)
    ids = [store_backup(repo, NOW - timedelta(hours=h, minutes=1)).id for h in reversed(range(30))]
    return str(tmp_path / "repo"), ids


def listed(out: str) -> list[str]:
    return [row["id"] for row in json.loads(out)]


def test_last_shows_only_the_newest_backups_oldest_first(run: Run, hourly: tuple[str, list[str]]) -> None:
    repo, ids = hourly
    code, out, _ = run("list", "--repo", repo, "--last", "3", "-o", "json")
    assert code == 0 and listed(out) == ids[-3:]
    code, out, _ = run("list", "--repo", repo, "--last", "3")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["ID", *ids[-3:]]


def test_since_an_age_or_a_time_shows_the_backups_started_since(run: Run, hourly: tuple[str, list[str]]) -> None:
    repo, ids = hourly
    assert listed(run("list", "--repo", repo, "--since", "2h", "-o", "json")[1]) == ids[-2:]
    since = (NOW - timedelta(hours=4, minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert listed(run("list", "--repo", repo, "--since", since, "-o", "json")[1]) == ids[-5:]
    assert listed(run("list", "--repo", repo, "--since", "1w", "--last", "2", "-o", "json")[1]) == ids[-2:]
    assert listed(run("list", "--repo", repo, "-o", "json")[1]) == ids


@pytest.mark.parametrize("flags", [("--last", "0"), ("--last", "x"), ("--since", "yesterday")])
def test_a_bad_limit_is_a_usage_error(run: Run, hourly: tuple[str, list[str]], flags: tuple[str, str]) -> None:
    code, out, err = run("list", "--repo", hourly[0], *flags)
    assert code == 3 and out == "" and flags[0] in err


def test_since_reads_dates_times_and_ages() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert parse_since("36h", now) == datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
    assert parse_since("2w", now) == datetime(2026, 11, 8, 12, 0, tzinfo=UTC)
    assert parse_since("2026-11-20", now) == datetime(2026, 11, 20, tzinfo=UTC)
    assert parse_since("2026-11-20T05:00:00+02:00", now) == datetime(2026, 11, 20, 3, tzinfo=UTC)
    with pytest.raises(UsageError, match="--since"):
        parse_since("7 days", now)


def test_the_timeline_of_a_cluster_the_repository_does_not_hold_is_not_an_empty_table(
        cli: Cli, tmp_path: Path) -> None:
    """A mistyped --cluster showed an empty table and exit 0, as if nothing had been captured."""
    held = backup_in(tmp_path / "repo")
    code, out, err = cli("timeline", "--repo", str(tmp_path / "repo"), "--cluster", "nope")
    assert (code, out) == (1, "") and "no backup or capture chain of cluster nope" in err
    assert f"its clusters: {held.cluster}" in err
    assert cli("timeline", "--repo", str(tmp_path / "repo"), "--cluster", held.cluster)[0] == 0


@pytest.mark.parametrize("command", [("list",), ("timeline",), ("show", "latest"), ("prune", "--dry-run", "--keep-last", "3")])
def test_a_repository_that_is_not_there_is_unavailable_as_help_says(
        cli: Cli, tmp_path: Path, command: tuple[str, ...]) -> None:
    """A --repo with no repository at it exited 1, as a failed operation, though --help gives
    2 for an unavailable repository (a mistyped path, a mount that is not there)."""
    code, out, err = cli(*command, "--repo", str(tmp_path / "not-mounted"))
    assert (code, out) == (2, "") and "no lifeboat repository at" in err, err
    assert not (tmp_path / "not-mounted").exists()


def test_synthesize_on_a_quiet_cluster_writes_nothing_and_is_not_an_error(cli: Cli, tmp_path: Path) -> None:
    """Nothing captured since the chain's base: a nightly `lifeboat synthesize` exited 3, as if
    it were misconfigured."""
    from lifeboat.catalog.chains import ChainInfo, ChainStore

    repo = BackupRepository.open(open_store(str(tmp_path / "repo")), create=True)
    base = store_backup(repo, NOW - timedelta(hours=1))
    ChainStore(repo.store).start(ChainInfo(base.id, base.cluster, base.id, base.snapshot.revision, "c1",
                                           base.finished_at))
    code, out, err = cli("synthesize", "--repo", str(tmp_path / "repo"), "--cluster", base.cluster)
    assert (code, err) == (0, "") and f"nothing captured since backup {base.id}" in out
    assert [m.id for m in repo.manifests()] == [base.id]
    code, out, err = cli("synthesize", "--repo", str(tmp_path / "repo"), "--cluster", base.cluster,
                         "--to-revision", str(base.snapshot.revision))
    assert code == 3 and "already a backup" in err  # a revision asked for that is a backup: the user's to fix


def test_delete_refuses_the_base_of_a_chain_capture_may_still_be_writing(cli: Cli, tmp_path: Path) -> None:
    """Deleting it by hand left the running capture appending segments with no base, restorable
    by nothing (the chain record went with the base), while it reported no gap."""
    repo, base = chained_backup(tmp_path, segments=1, seen=NOW - timedelta(minutes=1))
    flags = ("--repo", str(tmp_path / "repo"), "--cluster", base.cluster, "--yes")
    code, out, err = cli("delete", base.id, *flags)
    assert (code, out) == (3, "") and "which capture may still be writing" in err and "--force" in err, err
    assert [m.id for m in repo.manifests()] == [base.id]
    assert cli("delete", base.id, *flags, "--force")[0] == 0


def test_a_synthetic_backup_shows_the_window_end_of_the_chain_it_was_written_from(cli: Cli, tmp_path: Path) -> None:
    """`list` showed "-" for a synthetic backup, as if only its own revision were restorable
    from it, though the timeline restores every later revision of the chain from it."""
    from lifeboat.catalog.timeline import SYNTHETIC_CHAIN

    repo, base = chained_backup(tmp_path, segments=3, seen=NOW - timedelta(minutes=30))
    first = base.snapshot.revision + 1
    synthetic = store_backup(repo, NOW - timedelta(minutes=10), commit=False)
    synthetic = synthetic.model_copy(update={
        "labels": {SYNTHETIC_CHAIN: base.id},
        "snapshot": synthetic.snapshot.model_copy(update={"revision": first + 1})})
    repo.commit(synthetic)

    code, out, err = cli("list", "--repo", str(tmp_path / "repo"), "-o", "json")
    assert code == 0, err
    ends = {row["id"]: row["window_end"] for row in json.loads(out)}
    assert ends[base.id]["revision"] == ends[synthetic.id]["revision"] == first + 2
    assert ends[synthetic.id]["capturing"] is True


def test_a_backup_whose_times_do_not_fit_captures_is_named_by_timeline_and_prune(
        cli: Cli, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Taken inside a chain's revisions on a host whose clock is 20 minutes off capture's: it is
    no base of the chain and retention does not fold the chain into it; said, not left silent."""
    from lifeboat.catalog.timeline import STATE_REVISION

    repo, base = chained_backup(tmp_path, segments=3, seen=NOW - timedelta(minutes=30))
    skewed = store_backup(repo, NOW - timedelta(minutes=10), commit=False)
    revision = base.snapshot.revision + 2
    skewed = skewed.model_copy(update={
        "labels": {STATE_REVISION: str(revision)},
        "source": skewed.source.model_copy(update={"cluster_id": "c1"}),
        "snapshot": skewed.snapshot.model_copy(update={"revision": revision})})
    repo.commit(skewed)
    flags = ("--repo", str(tmp_path / "repo"))

    code, out, err = cli("timeline", *flags)
    assert code == 0, err
    assert f"note: backup {skewed.id} is not a base of capture chain {base.id}" in out and "clock" in out
    (shown,) = cli.json("timeline", *flags)
    assert [u["backup"] for u in shown["unplaced"]] == [skewed.id]  # type: ignore[index]
    code, _out, err = cli("prune", *flags, "--keep-last", "5", "--dry-run")
    assert code == 0, err
    assert f"backup {skewed.id} is not a base of capture chain {base.id}" in caplog.text


def chained_backup(tmp_path: Path, *, segments: int, seen: datetime) -> tuple[BackupRepository, Manifest]:
    """A local repository holding a backup an hour old and its open chain of ``segments``
    segments of one revision each, the first seen at ``seen``."""
    from dataclasses import replace

    from lifeboat.catalog.chains import ChainInfo, ChainStore, segment_name
    from lifeboat.catalog.segments import Predecessor
    from tests.unit.catalog.capture_records import T0, put, segment

    repo = BackupRepository.open(open_store(str(tmp_path / "repo")), create=True)
    base = store_backup(repo, NOW - timedelta(hours=1))
    chains = ChainStore(repo.store)
    chains.start(ChainInfo(base.id, base.cluster, base.id, base.snapshot.revision, "c1", base.finished_at))
    first = base.snapshot.revision + 1
    previous = Predecessor("base", first - 1, base.id)
    for revision in range(first, first + segments):
        at = (seen - T0).total_seconds() + revision - first
        written = replace(segment(previous, (revision, at, [put(b"/k", b"v", first, revision, 1)])),
                          cluster=base.cluster, chain=base.id)
        chains.commit_segment(written, (), 1)
        previous = Predecessor("segment", revision, segment_name(written, False))
    return repo, base

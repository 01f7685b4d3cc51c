"""The manifest cache under real processes: two ``list`` at once, and a ``list`` killed mid-write.

The cache is one SQLite file that any number of lifeboat processes (two operators, the agent
and the CLI) share. Whatever they do to it at once, and wherever one of them dies, every
``list`` must show exactly the backups the repository holds, and the cache must stay usable.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lifeboat.catalog.manifest import BackupSummary, Manifest
from lifeboat.catalog.manifest_cache import CACHE_FILE, ManifestCache
from lifeboat.catalog.repository import BackupRepository
from lifeboat.store import open_store
from tests.faults.conftest import lifeboat_process
from tests.support.counting_store import CountingStore
from tests.support.manifests import fake_backup

pytestmark = pytest.mark.integration

COUNT = 300


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Manifest]]]:
    """A local repository of COUNT backups with kubeadm-sized manifests."""
    path = tmp_path_factory.mktemp("cache-processes") / "repo"
    repo = BackupRepository.open(open_store(str(path)), create=True)
    newest = datetime.now(UTC) - timedelta(minutes=10)
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda i: fake_backup(repo, newest - timedelta(minutes=30 * i), files=30),
                             range(COUNT)))
    yield path, sorted(made, key=lambda m: m.id)


def listed(process: subprocess.Popen[bytes], timeout: float = 120) -> list[str]:
    """The ids a ``list -o json`` process printed; it must exit 0 and report nothing damaged."""
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err.decode()
    shown = json.loads(out)
    assert all(b["status"] != "damaged" for b in shown), shown
    return [b["id"] for b in shown]


def list_process(repo: Path, cache: Path) -> subprocess.Popen[bytes]:
    return lifeboat_process(["list", "--repo", str(repo), "--cache-dir", str(cache), "-o", "json"])


def assert_cache_sound_and_warm(repo: Path, cache: Path, made: list[Manifest]) -> None:
    """The file passes SQLite's check, and a listing from it downloads no manifest and shows
    exactly the backups (the summaries of their manifests)."""
    with sqlite3.connect(cache / CACHE_FILE) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()
    store = CountingStore(open_store(str(repo)))
    cached = BackupRepository.open(store, cache=ManifestCache(cache, store.url))  # type: ignore[arg-type]
    shown = [b for page in cached.summary_pages() for b in page.backups]
    assert shown == [BackupSummary.of(m) for m in made]
    assert store.manifests_read == 0


def test_two_lists_at_once_each_show_every_backup_and_leave_a_sound_cache(
        repository: tuple[Path, list[Manifest]], tmp_path: Path) -> None:
    repo, made = repository
    cache = tmp_path / "cache"
    ids = [m.id for m in made]
    for _ in range(2):  # both filling an empty cache, then both reading a warm one
        runs = [list_process(repo, cache) for _ in range(2)]
        assert [listed(run) for run in runs] == [ids, ids]
    assert_cache_sound_and_warm(repo, cache, made)


def test_a_list_killed_at_any_moment_leaves_a_cache_the_next_list_uses(
        repository: tuple[Path, list[Manifest]], tmp_path: Path) -> None:
    repo, made = repository
    cache = tmp_path / "cache"
    ids = [m.id for m in made]
    # A first list, timed, to spread the kills over the whole of an empty-cache list.
    started = time.monotonic()
    assert listed(list_process(repo, cache)) == ids
    whole = time.monotonic() - started
    for fraction in (0.35, 0.6, 0.85):
        (cache / CACHE_FILE).unlink()
        run = list_process(repo, cache)
        time.sleep(whole * fraction)
        run.send_signal(signal.SIGKILL)
        run.communicate()
        again = list_process(repo, cache)
        assert listed(again, timeout=60) == ids
    assert_cache_sound_and_warm(repo, cache, made)


# Runs ``lifeboat list`` in a process whose cache connection stops, for good, right after it
# wrote its first rows inside a transaction, and says so by creating the file in argv[1].
_STOPPED_MID_WRITE = textwrap.dedent("""
    import sqlite3, sys, time
    from pathlib import Path
    import lifeboat.catalog.manifest_cache as cache

    class StopsMidWrite(sqlite3.Connection):
        def executemany(self, sql, rows):
            cursor = super().executemany(sql, rows)
            if sql.startswith("INSERT"):
                Path(sys.argv[1]).touch()
                time.sleep(600)
            return cursor

    connect = sqlite3.connect
    cache.sqlite3.connect = lambda *args, **kwargs: connect(*args, factory=StopsMidWrite, **kwargs)
    from lifeboat.cli.main import main
    sys.exit(main(sys.argv[2:]))
""")


def test_a_list_killed_inside_its_cache_transaction_loses_only_its_own_rows(
        repository: tuple[Path, list[Manifest]], tmp_path: Path) -> None:
    repo, made = repository
    cache = tmp_path / "cache"
    ids = [m.id for m in made]
    assert listed(list_process(repo, cache)) == ids  # the cache holds every backup
    # Half the backups' rows are gone: the stopped writer will insert them again, uncommitted.
    with sqlite3.connect(cache / CACHE_FILE) as db:
        for table in ("manifest", "summary"):
            db.execute(f"DELETE FROM {table} WHERE rowid % 2 = 0")
    db.close()
    signal_file = tmp_path / "inside-transaction"
    writer = subprocess.Popen(
        [sys.executable, "-c", _STOPPED_MID_WRITE, str(signal_file),
         "list", "--repo", str(repo), "--cache-dir", str(cache), "-o", "json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not signal_file.exists():
            assert writer.poll() is None, writer.communicate()[1].decode()
            assert time.monotonic() < deadline, "the writer never wrote to the cache"
            time.sleep(0.05)
        # While it holds its transaction open, another list shows every backup, in time.
        started = time.monotonic()
        assert listed(list_process(repo, cache), timeout=60) == ids
        assert time.monotonic() - started < 60
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.communicate()
    assert listed(list_process(repo, cache), timeout=60) == ids
    assert_cache_sound_and_warm(repo, cache, made)

"""Manifests already read, kept on this machine so a listing need not download them again.

A manifest is immutable once written (create-only, deleted last), so the bytes under one key
with one size and one version tag (S3's ETag; a local file's inode and mtime) never change.
The cache maps that triple to the manifest as it was validated, and is asked only about
manifests a *live* listing of the repository just showed: it never decides which backups
exist, so it can never show a backup that is gone. Anything unexpected (a row of another
version, an unreadable or corrupt file, a locked database) is a miss, and the manifest is
read from the store as if there were no cache.

Beside each manifest the cache keeps its summary (:class:`~lifeboat.catalog.manifest.BackupSummary`:
the manifest without its captured files' records, and their count), under the same key, size
and version: ``list`` needs only that, and a summary is a seventh of a kubeadm node's manifest
to read and check. Both are re-validated with the manifest's strict schema when used (tens of
microseconds, against a round trip to the store): a damaged cache row can only cost a read,
never put a wrong manifest on screen. Damaged manifests are never cached, so they are read
and reported each time.

The file is SQLite in WAL mode (one transaction per batch, so two writers at once — two
``list``, the agent and the CLI — each write whole rows or nothing) in a directory only the user
can read (0700, the file and its WAL 0600): a manifest names hosts, members and recipients.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from lifeboat.catalog.layout import is_manifest_key_of
from lifeboat.catalog.manifest import BackupSummary, Manifest
from lifeboat.config.rules import CACHE_DIR_ENV, CACHE_DIR_EXAMPLE, path_from_environment
from lifeboat.errors import IntegrityError
from lifeboat.store.base import ObjectInfo

CACHE_FILE = "manifests.sqlite3"
_SCHEMA = ("""CREATE TABLE IF NOT EXISTS manifest (
    repository TEXT NOT NULL, key TEXT NOT NULL, size INTEGER NOT NULL, version TEXT NOT NULL,
    document BLOB NOT NULL, PRIMARY KEY (repository, key))""",
           # document: the manifest without "files"; files: how many it has.
           """CREATE TABLE IF NOT EXISTS summary (
    repository TEXT NOT NULL, key TEXT NOT NULL, size INTEGER NOT NULL, version TEXT NOT NULL,
    files INTEGER NOT NULL, document BLOB NOT NULL, PRIMARY KEY (repository, key))""")
_TABLES = ("manifest", "summary")
T = TypeVar("T")
# SQLite before 3.32 allows at most 999 parameters in one statement.
_KEYS_PER_QUERY = 500
# How long a writer waits for another one's transaction before giving up (a miss, not an error).
_BUSY_TIMEOUT_S = 2.0


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """``$LIFEBOAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/lifeboat``, else ``~/.cache/lifeboat``."""
    given = path_from_environment(environ, CACHE_DIR_ENV, CACHE_DIR_EXAMPLE)
    if given is not None:
        return given
    base = environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the spec says a relative value is to be ignored
        base = str(Path(environ.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "lifeboat"


def version_of(info: ObjectInfo) -> str | None:
    """What tells one write of a key from another, or None when the store reports nothing."""
    if info.etag:
        return f"etag:{info.etag}"
    if info.modified is not None:
        return f"modified:{info.modified.isoformat()}"
    return None


class CachedEntries(Generic[T]):
    """Entries read from the cache at one moment, by key, each with the size and version it was read at."""

    def __init__(self, entries: Mapping[str, tuple[object, object, T]]) -> None:
        self._entries = entries

    def lookup(self, infos: Sequence[ObjectInfo]) -> dict[str, T]:
        """Those among ``infos`` that a listing shows with the size and version cached, by key."""
        found: dict[str, T] = {}
        for info in infos:
            entry = self._entries.get(info.key)
            if entry is not None and entry[:2] == (info.size, version_of(info)):
                found[info.key] = entry[2]
        return found


class ManifestCache:
    """Validated manifests of one repository, by key, size and version (see the module doc)."""

    def __init__(self, directory: Path, repository: str) -> None:
        self.path = directory / CACHE_FILE
        self.repository = repository
        self._directory = directory

    def lookup(self, infos: Sequence[ObjectInfo]) -> dict[str, Manifest]:
        """The cached manifests among ``infos`` whose size and version match, by key."""
        return self._manifests(self._select("manifest", "document", keys=[info.key for info in infos])).lookup(infos)

    def lookup_summaries(self, infos: Sequence[ObjectInfo]) -> dict[str, BackupSummary]:
        """The cached summaries among ``infos`` whose size and version match, by key."""
        return self._summaries(self._select("summary", "files, document",
                                            keys=[info.key for info in infos])).lookup(infos)

    def manifests_under(self, prefix: str) -> CachedEntries[Manifest]:
        """Every valid manifest cached under ``prefix``, with the size and version it was read at.

        A listing of every backup asks for this while the store lists keys, so the checks of
        the cached entries run meanwhile; it then uses only those the listing shows.
        """
        return self._manifests(self._select("manifest", "document", prefix=prefix))

    def summaries_under(self, prefix: str) -> CachedEntries[BackupSummary]:
        """Like :meth:`manifests_under`, for the summaries."""
        return self._summaries(self._select("summary", "files, document", prefix=prefix))

    def _manifests(self, rows: Iterable[Sequence[Any]]) -> CachedEntries[Manifest]:
        return CachedEntries({key: (size, version, manifest) for key, size, version, document in rows
                              if (manifest := self._valid(key, document)) is not None})

    def _summaries(self, rows: Iterable[Sequence[Any]]) -> CachedEntries[BackupSummary]:
        return CachedEntries({key: (size, version, summary) for key, size, version, files, document in rows
                              if (summary := self._valid_summary(key, files, document)) is not None})

    def _valid_summary(self, key: str, files: object, document: object) -> BackupSummary | None:
        manifest = self._valid(key, document)
        if manifest is not None and not manifest.files and type(files) is int and files >= 0:
            return BackupSummary(manifest, files)
        return None

    def _select(self, table: str, columns: str, *, keys: Sequence[str] = (),
                prefix: str | None = None) -> list[Sequence[Any]]:
        """Key, size, version and ``columns`` of the rows of ``table`` under ``prefix``, or with ``keys``."""
        head = f"SELECT key, size, version, {columns} FROM {table} WHERE repository = ? AND "
        queries: list[tuple[str, tuple[object, ...]]]
        if prefix is not None:
            queries = [(head + "substr(key, 1, ?) = ?", (len(prefix), prefix))]
        else:
            batches = [tuple(keys[start:start + _KEYS_PER_QUERY]) for start in range(0, len(keys), _KEYS_PER_QUERY)]
            queries = [(head + f"key IN ({', '.join('?' * len(batch))})", batch) for batch in batches]
        if not queries:
            return []
        rows = self._query(lambda db: [row for sql, values in queries
                                       for row in db.execute(sql, (self.repository, *values)).fetchall()])
        return rows or []

    def _valid(self, key: str, document: object) -> Manifest | None:
        """The manifest in a row, if it passes the strict schema and is the one stored under ``key``."""
        if not isinstance(document, bytes):
            return None
        try:
            manifest = Manifest.from_json(document, where=f"{self.path} ({key})")
        except IntegrityError:
            return None  # a damaged row: read the manifest from the store instead
        return manifest if is_manifest_key_of(key, manifest.cluster, manifest.id) else None

    def remember(self, entries: Iterable[tuple[ObjectInfo, Manifest]]) -> None:
        """Keep manifests just read and validated, and their summaries (best effort: a failure
        only costs reads later)."""
        listed = [(info, version, manifest) for info, manifest in entries
                  if (version := version_of(info)) is not None]
        if not listed:
            return
        whole = [(self.repository, info.key, info.size, version, manifest.model_dump_json().encode())
                 for info, version, manifest in listed]
        summaries = [(self.repository, info.key, info.size, version, summary.files,
                      summary.manifest.model_dump_json().encode())
                     for info, version, manifest in listed for summary in (BackupSummary.of(manifest),)]

        def write(db: sqlite3.Connection) -> None:
            db.executemany("INSERT OR REPLACE INTO manifest VALUES (?, ?, ?, ?, ?)", whole)
            db.executemany("INSERT OR REPLACE INTO summary VALUES (?, ?, ?, ?, ?, ?)", summaries)

        self._query(write)

    def forget_except(self, prefix: str, keys: Iterable[str]) -> None:
        """Drop entries under ``prefix`` whose key a complete listing no longer shows."""
        keep = set(keys)

        def prune(db: sqlite3.Connection) -> None:
            for table in _TABLES:
                stored = db.execute(f"SELECT key FROM {table} WHERE repository = ? AND substr(key, 1, ?) = ?",
                                    (self.repository, len(prefix), prefix)).fetchall()
                gone = [(self.repository, key) for (key,) in stored if key not in keep]
                db.executemany(f"DELETE FROM {table} WHERE repository = ? AND key = ?", gone)

        self._query(prune)

    def _query(self, work: Callable[[sqlite3.Connection], T]) -> T | None:
        try:
            db = self._connect()
        except (OSError, sqlite3.Error):
            return None
        try:
            with db:
                return work(db)
        except sqlite3.DatabaseError as exc:
            if _corrupt(exc):
                self._discard()
            return None
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self._directory, 0o700)
        # Created 0600 before SQLite opens it; SQLite gives its journal the same mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S)
        try:
            # WAL with synchronous=NORMAL syncs at checkpoints, not at every page's commit: a
            # crash may lose the last rows (a few downloads later), never corrupt the file.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for table in _SCHEMA:
                db.execute(table)
        except sqlite3.DatabaseError as exc:
            db.close()
            if _corrupt(exc):
                self._discard()
            raise
        return db

    def _discard(self) -> None:
        """Remove a cache file SQLite cannot read; the next use starts an empty one."""
        for path in [self.path] + [self.path.with_name(self.path.name + end) for end in ("-journal", "-wal", "-shm")]:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                return


def _corrupt(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the file is not a database or is damaged (not merely busy)."""
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text

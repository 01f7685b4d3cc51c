"""Manifests already read, kept on this machine so a listing need not download them again.

A manifest is immutable once written (create-only, deleted last), so the bytes under one key
with one size and one version tag (S3's ETag; a local file's inode and mtime) never change.
The cache maps that triple to the manifest as it was validated, and is asked only about
manifests a *live* listing of the repository just showed: it never decides which backups
exist, so it can never show a backup that is gone. Anything unexpected (a row of another
version, an unreadable or corrupt file, a locked database) is a miss, and the manifest is
read from the store as if there were no cache.

Entries are re-validated with the manifest's strict schema when used (a few tens of
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
from typing import TypeVar

from lifeboat.catalog.layout import manifest_key
from lifeboat.catalog.manifest import Manifest
from lifeboat.errors import IntegrityError
from lifeboat.store.base import ObjectInfo

CACHE_FILE = "manifests.sqlite3"
CACHE_DIR_ENV = "LIFEBOAT_CACHE_DIR"
_SCHEMA = """CREATE TABLE IF NOT EXISTS manifest (
    repository TEXT NOT NULL, key TEXT NOT NULL, size INTEGER NOT NULL, version TEXT NOT NULL,
    document BLOB NOT NULL, PRIMARY KEY (repository, key))"""
T = TypeVar("T")
# SQLite before 3.32 allows at most 999 parameters in one statement.
_KEYS_PER_QUERY = 500
# How long a writer waits for another one's transaction before giving up (a miss, not an error).
_BUSY_TIMEOUT_S = 2.0


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """``$LIFEBOAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/lifeboat``, else ``~/.cache/lifeboat``."""
    if environ.get(CACHE_DIR_ENV):
        return Path(environ[CACHE_DIR_ENV]).absolute()
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


class ManifestCache:
    """Validated manifests of one repository, by key, size and version (see the module doc)."""

    def __init__(self, directory: Path, repository: str) -> None:
        self.path = directory / CACHE_FILE
        self.repository = repository
        self._directory = directory

    def lookup(self, infos: Sequence[ObjectInfo]) -> dict[str, Manifest]:
        """The cached manifests among ``infos`` whose size and version match, by key."""
        wanted = {info.key: (info.size, version_of(info)) for info in infos}
        keys = list(wanted)
        rows = self._query(lambda db: [row for start in range(0, len(keys), _KEYS_PER_QUERY) for row in db.execute(
            "SELECT key, size, version, document FROM manifest WHERE repository = ? AND key IN "
            f"({', '.join('?' * len(keys[start:start + _KEYS_PER_QUERY]))})",
            (self.repository, *keys[start:start + _KEYS_PER_QUERY])).fetchall()]) if keys else []
        found: dict[str, Manifest] = {}
        for key, size, version, document in rows or ():
            if wanted.get(key) != (size, version):
                continue
            try:
                manifest = Manifest.from_json(document, where=f"{self.path} ({key})")
            except IntegrityError:
                continue  # a damaged row: read the manifest from the store instead
            if manifest_key(manifest.cluster, manifest.id) == key:
                found[key] = manifest
        return found

    def remember(self, entries: Iterable[tuple[ObjectInfo, Manifest]]) -> None:
        """Keep manifests just read and validated (best effort: a failure only costs reads later)."""
        rows = [(self.repository, info.key, info.size, version, manifest.model_dump_json().encode())
                for info, manifest in entries if (version := version_of(info)) is not None]
        if rows:
            self._query(lambda db: db.executemany(
                "INSERT OR REPLACE INTO manifest VALUES (?, ?, ?, ?, ?)", rows))

    def forget_except(self, prefix: str, keys: Iterable[str]) -> None:
        """Drop entries under ``prefix`` whose key a complete listing no longer shows."""
        keep = set(keys)

        def prune(db: sqlite3.Connection) -> None:
            stored = db.execute("SELECT key FROM manifest WHERE repository = ? AND substr(key, 1, ?) = ?",
                                (self.repository, len(prefix), prefix)).fetchall()
            gone = [(self.repository, key) for (key,) in stored if key not in keep]
            db.executemany("DELETE FROM manifest WHERE repository = ? AND key = ?", gone)

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
            db.execute(_SCHEMA)
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

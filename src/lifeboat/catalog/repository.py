"""The backup repository: format marker, a backup's objects, commit and delete order.

Object names come from :mod:`lifeboat.catalog.layout`. A backup exists only once its
manifest exists: data objects without a manifest are the remains of an interrupted backup
or delete and are never listed as backups. Callers read and write a backup's objects
through :class:`BackupRepository`, never through its object store.

Reads cost what is asked, not what is stored. Backup ids sort by the time the backup
started, and a listing can start after a given id, so ``latest`` lists the last days' keys
and reads manifests newest first until one is complete; a backup asked for by id is one
read of its manifest; a listing of many backups reads their manifests a page at a time,
several at once. Which backups exist is always read from the store's listing as it is now;
an optional :class:`~lifeboat.catalog.manifest_cache.ManifestCache` only spares downloading
again a manifest that listing shows with the same key, size and version as one read before.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Generic, Protocol, TypeVar

from lifeboat import __version__
from lifeboat.catalog.chains import ChainStore
from lifeboat.catalog.ids import check_backup_id, check_cluster_name, id_floor, id_second
from lifeboat.catalog.layout import (
    CLUSTERS,
    MARKER_KEY,
    BackupObjectName,
    backup_object_key,
    CURRENT_LAYOUT,
    LAYOUTS,
    Layout,
    ObjectKind,
    backup_prefix,
)
from lifeboat.catalog.manifest import BackupStatus, BackupSummary, DamagedManifest, Manifest
from lifeboat.catalog.manifest_cache import CachedEntries, ManifestCache
from lifeboat.catalog.pins import DeletionClaim, Pin, read_pin_record
from lifeboat.catalog.records import MANIFEST_MAX, SMALL_RECORD_MAX, read_record
from lifeboat.catalog.streams import Chunk, ranged
from lifeboat.clock import Clock, SystemClock
from lifeboat.errors import (
    AlreadyExists, IntegrityError, NoRepository, NotFound, OperationFailed, UsageError,
)
from lifeboat.store.base import PROBE_FOLDER, IncompleteUpload, ObjectInfo, ObjectStore
from lifeboat.waits import finished, mapped

# What this lifeboat creates; it reads and writes every format in LAYOUTS.
REPOSITORY_FORMAT = CURRENT_LAYOUT.format

# Manifests are small objects whose read is mostly a round trip to the store, so a listing
# reads a page of them at once (5,000 from SeaweedFS on loopback: 4 s one by one, 2.3 s with
# 16 at a time on 2 busy cores) and shows each page before it reads the next.
READS_AT_ONCE = 16
PAGE_SIZE = 250

# A restore reads a large object as ranges, several at once: one S3 connection carries less
# than the store and the network can, and decompression and checks run while ranges arrive.
# Memory stays near RANGE_SIZE × (RANGES_IN_FLIGHT + 1).
RANGE_SIZE = 4 << 20
RANGES_IN_FLIGHT = 4

# ``latest`` looks among the backups started in the last LATEST_WINDOWS[0] first, then the
# next window, then among all: a repository backed up at least daily is answered from the
# keys of the last two days.
LATEST_WINDOWS = (timedelta(days=2), timedelta(days=40))

class BackupRef(Protocol):
    """What names a backup: a manifest, or a damaged one."""

    @property
    def cluster(self) -> str: ...

    @property
    def id(self) -> str: ...


# What a listing holds of each readable backup: its manifest, or only its summary.
B = TypeVar("B", Manifest, BackupSummary)


@dataclass(frozen=True)
class Listing(Generic[B]):
    """What a repository holds: readable backups (oldest first) and damaged manifests.

    ``pins`` holds the pin of every pinned backup in ``backups``, by (cluster, id).
    """

    backups: tuple[B, ...]
    damaged: tuple[DamagedManifest, ...]
    pins: dict[tuple[str, str], Pin] = field(default_factory=dict)


@dataclass(frozen=True)
class _Reading(Generic[B]):
    """What a listing shows of each backup, and where the cache keeps it."""

    under: Callable[[ManifestCache, str], CachedEntries[B]]
    lookup: Callable[[ManifestCache, Sequence[ObjectInfo]], dict[str, B]]
    shown: Callable[[Manifest], B]


def _whole(manifest: Manifest) -> Manifest:
    return manifest


_MANIFESTS = _Reading(ManifestCache.manifests_under, ManifestCache.lookup, _whole)
_SUMMARIES = _Reading(ManifestCache.summaries_under, ManifestCache.lookup_summaries, BackupSummary.of)


@dataclass(frozen=True)
class CommittedBackup:
    """A backup whose manifest a listing of keys showed (the manifest itself not read yet)."""

    cluster: str
    id: str
    pinned: bool = False
    manifest: ObjectInfo | None = field(default=None, compare=False)  # as that listing showed it


class BackupRepository:
    """Backups of one or more clusters in one object store."""

    def __init__(self, store: ObjectStore, clock: Clock | None = None,
                 cache: ManifestCache | None = None, layout: Layout = CURRENT_LAYOUT) -> None:
        self.store = store
        self.clock = clock or SystemClock()
        self.cache = cache
        self.layout = layout  # the repository's format, from its marker

    @property
    def url(self) -> str:
        return self.store.url

    @property
    def chain_store(self) -> ChainStore:
        """The continuous-capture chains kept in this repository beside its backups."""
        return ChainStore(self.store)

    @classmethod
    def open(cls, store: ObjectStore, *, create: bool = False, clock: Clock | None = None,
             cache: ManifestCache | None = None) -> BackupRepository:
        """Open the repository in ``store``; with ``create``, initialise an empty store.

        With ``cache``, listings reuse manifests read before (see :mod:`.manifest_cache`).
        """
        repo = cls(store, clock, cache)
        try:
            marker = repo._marker()
        except NotFound:
            if not create:  # a mistyped --repo, or a mount that is not there: unavailable (exit 2)
                raise NoRepository(
                    f"no lifeboat repository at {store.url} (no {MARKER_KEY}); "
                    "check --repo, or run 'lifeboat backup' to create one"
                ) from None
            repo._create_marker()
            return repo
        repo.layout = repo._check_marker(marker)
        return repo

    def _create_marker(self) -> None:
        if any(not obj.key.startswith(PROBE_FOLDER) for obj in itertools.islice(self.store.list(""), 2)):
            # Another agent may have created the repository since we found no marker.
            try:
                self.layout = self._check_marker(self._marker())
                return
            except NotFound:
                pass
            raise UsageError(
                f"{self.store.url} is not empty and is not a lifeboat repository; "
                "use an empty bucket prefix or directory"
            )
        self.layout = CURRENT_LAYOUT
        marker = {
            "format": "lifeboat-repository",
            "version": CURRENT_LAYOUT.format,
            "created_at": self.clock.now().isoformat(timespec="seconds"),
            "created_by": f"lifeboat {__version__}",
        }
        try:
            self.store.put_bytes(MARKER_KEY, json.dumps(marker).encode(), create_only=True)
        except AlreadyExists:
            # Another agent created it at the same moment: theirs is as good as ours.
            self.layout = self._check_marker(self._marker())

    def _marker(self) -> bytes:
        return read_record(self.store, MARKER_KEY, SMALL_RECORD_MAX, "repository marker")

    def _check_marker(self, data: bytes) -> Layout:
        """The layout of the format the marker names; a UsageError for a newer or unknown one."""
        try:
            marker = json.loads(data)
            version = marker["version"]
            # Exactly a JSON integer: int() would read true or 1.9 as format 1, and 1e400 fails.
            if marker["format"] != "lifeboat-repository" or type(version) is not int:
                raise ValueError("wrong format name or version")
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"{self.store.url}: {MARKER_KEY} is not a lifeboat marker") from None
        if version > REPOSITORY_FORMAT:
            raise UsageError(
                f"repository {self.store.url} has format {version}, newer than this lifeboat "
                f"understands ({REPOSITORY_FORMAT}); upgrade lifeboat"
            )
        if version not in LAYOUTS:
            raise UsageError(f"{self.store.url}: {MARKER_KEY} names format {version}, which no lifeboat wrote")
        return LAYOUTS[version]

    def require_create_only(self) -> None:
        """Refuse (UsageError) a store that would let a manifest be written over; for a writer to
        call before it uploads anything (the manifest's own create-only write would find it last)."""
        self.store.require_create_only()

    def object_key(self, manifest: Manifest, name: str) -> str:
        return backup_object_key(manifest.cluster, manifest.id, name)

    def manifest_key(self, backup: BackupRef) -> str:
        """Where the backup's manifest is (or would be) stored."""
        return self.layout.manifest_key(backup.cluster, backup.id)

    def write_object(self, cluster: str, backup_id: str, name: str, chunks: Iterable[bytes]) -> None:
        """Store one data object of a backup not committed yet (overwriting a partial one)."""
        self.store.put_stream(backup_object_key(cluster, backup_id, name), chunks)

    def read_object(self, manifest: Manifest, name: str) -> Iterator[Chunk]:
        """The stored bytes of one of a committed backup's objects, in order, as they come.

        A large object is read as :data:`RANGE_SIZE` ranges, :data:`RANGES_IN_FLIGHT` at once
        (its size from the store, so that a stored size unlike the manifest's is noticed).
        """
        key = self.object_key(manifest, name)
        info = self.store.stat(key)
        if info is None:
            raise NotFound(f"object {key} not found in {self.store.url}")
        if info.size <= 2 * RANGE_SIZE:
            return self.store.get_stream(key)
        return ranged(lambda start, end: self.store.get_range(key, start, end), info.size,
                      RANGE_SIZE, RANGES_IN_FLIGHT)

    def missing_objects(self, manifest: Manifest) -> list[str]:
        """What is gone from a committed backup: its manifest, or objects absent or of another size.

        One HEAD (stat) per object, no download: cheap enough for ``show`` and ``list --check``.
        """
        problems = [] if self.store.stat(self.manifest_key(manifest)) is not None else [
            "its manifest is gone (the backup was deleted)"]
        for obj in manifest.objects:
            info = self.store.stat(self.object_key(manifest, obj.name))
            if info is None:
                problems.append(f"{obj.name} is missing")
            elif info.size != obj.size:
                problems.append(f"{obj.name} is {info.size} bytes, the manifest says {obj.size}")
        return problems

    def backup_objects(self, cluster: str | None = None) -> Iterator[tuple[BackupObjectName, ObjectInfo]]:
        """Every object of a backup (data, manifest, pin), committed or not, with its name taken apart.

        Data objects are listed before manifests: a backup that commits meanwhile is seen
        committed, or as uncommitted objects written just now.
        """
        for folder in self.layout.object_folders(cluster):
            for obj in self.store.list(folder):
                name = self.layout.parse(obj.key)
                if name is not None:
                    yield name, obj

    def commit(self, manifest: Manifest) -> None:
        """Write the manifest, create-only: the moment the backup starts to exist.

        First every object the manifest names must be in the store with the size it records:
        something (a prune with a short orphan grace, an operator, a lifecycle rule) may have
        removed or replaced one while the backup ran, and a manifest must never commit a
        backup whose data is gone. Such a backup fails (OperationFailed) and is not committed,
        as does one whose manifest would not read back (text that is no UTF-8).
        """
        key = self.layout.manifest_key(check_cluster_name(manifest.cluster), manifest.id)
        for obj in manifest.objects:
            found = self.store.stat(self.object_key(manifest, obj.name))
            if found is None or found.size != obj.size:
                what = "is missing" if found is None else f"holds {found.size} bytes, not {obj.size}"
                raise OperationFailed(
                    f"object {obj.name} of backup {manifest.id} {what} in {self.store.url} just before "
                    "its manifest was to be written (removed while the backup ran, e.g. by a prune "
                    "with a short orphan grace?); the backup was not committed"
                )
        data = manifest.to_json()
        try:
            Manifest.from_json(data, key)
        except IntegrityError as exc:
            raise OperationFailed(f"the manifest of backup {manifest.id} would not read back ({exc}); "
                                  "the backup was not committed (a bug: please report it)") from None
        self.store.put_bytes(key, data, create_only=True)

    def clusters(self) -> tuple[str, ...]:
        """The clusters that have (or had) objects in the repository, from one folder listing."""
        return self.store.folders(CLUSTERS)

    def committed(self, cluster: str | None = None, *, since: datetime | None = None) -> list[CommittedBackup]:
        """Every backup whose manifest exists (oldest first), from listings of keys only.

        With ``since``, only backups started since then (to the second): the listing starts
        after that id, so it costs what it returns. Without ``cluster``, every cluster's.
        """
        manifests: list[tuple[BackupObjectName, ObjectInfo]] = []
        pinned: set[tuple[str, str]] = set()
        for name, obj in self._commit_objects(cluster, since):
            if name.is_manifest:
                manifests.append((name, obj))
            elif name.is_pin:
                pinned.add((name.cluster, name.backup_id))
        found = [CommittedBackup(name.cluster, name.backup_id, (name.cluster, name.backup_id) in pinned, info)
                 for name, info in manifests]
        found.sort(key=lambda b: (b.id, b.cluster))
        return found

    def _commit_objects(self, cluster: str | None,
                        since: datetime | None = None) -> Iterator[tuple[BackupObjectName, ObjectInfo]]:
        """The manifests and pins of backups started since ``since`` (every one without), as listed.

        Format 2 lists two flat folders per cluster; format 1 every backup's folder.
        """
        after = id_floor(since) if since is not None else ""
        for name in (cluster,) if cluster else self.clusters():
            for folder in self.layout.commit_folders(name):
                for obj in self.store.list(folder, after=after):
                    parsed = self.layout.parse(obj.key)
                    if parsed is not None and parsed.kind is not ObjectKind.DATA:
                        yield parsed, obj

    def newest(self, count: int, cluster: str | None = None, *,
               since: datetime | None = None) -> list[CommittedBackup]:
        """The newest ``count`` committed backups (oldest first), started since ``since`` if given.

        Like ``latest``, it lists only the keys of the backups started in the last
        :data:`LATEST_WINDOWS` and widens, finally to every backup, only while that window holds
        fewer than ``count``. A window from a moment on holds every backup started since then, so
        its newest ``count`` are the repository's, whatever the ids in between.
        """
        if count <= 0:
            return []
        now = self.clock.now()
        for window in LATEST_WINDOWS:
            floor = now - window
            if since is not None and floor <= since:
                break
            found = self.committed(cluster, since=floor)
            if len(found) >= count:
                return found[-count:]
        return self.committed(cluster, since=since)[-count:]

    def read_manifest(self, cluster: str, backup_id: str) -> Manifest | DamagedManifest | None:
        """The manifest of one backup, a damaged one with why, or None when it does not exist."""
        key = self.layout.manifest_key(cluster, backup_id)
        try:
            data = read_record(self.store, key, MANIFEST_MAX, "manifest")
        except NotFound:
            return None
        except IntegrityError as exc:
            return DamagedManifest(cluster, backup_id, key, str(exc))
        try:
            manifest = Manifest.from_json(data, where=f"{self.store.url}/{key}")
            if (manifest.cluster, manifest.id) != (cluster, backup_id):
                raise IntegrityError(f"manifest {self.store.url}/{key} names backup {manifest.id} of "
                                     f"cluster {manifest.cluster}, not the one it is stored as")
        except IntegrityError as exc:
            return DamagedManifest(cluster, backup_id, key, str(exc))
        return manifest

    def pages(self, cluster: str | None = None, *, since: datetime | None = None, last: int | None = None,
              page_size: int = PAGE_SIZE) -> Iterator[Listing[Manifest]]:
        """The committed backups (oldest first) a page at a time, each page's manifests read together.

        ``since`` keeps backups started since then, ``last`` the newest ``last`` of those
        (damaged ones count); only the manifests kept are read, and with ``last`` only the keys
        of recent backups are listed (see :meth:`newest`).
        """
        return self._pages(cluster, since, last, page_size, _MANIFESTS)

    def summary_pages(self, cluster: str | None = None, *, since: datetime | None = None,
                      last: int | None = None, page_size: int = PAGE_SIZE) -> Iterator[Listing[BackupSummary]]:
        """Like :meth:`pages`, but each backup's summary: from the cache, without reading its
        manifest, when the cache holds the listed version."""
        return self._pages(cluster, since, last, page_size, _SUMMARIES)

    def _pages(self, cluster: str | None, since: datetime | None, last: int | None, page_size: int,
               reading: _Reading[B]) -> Iterator[Listing[B]]:
        with ThreadPoolExecutor(READS_AT_ONCE, thread_name_prefix="lifeboat-manifests") as pool:
            early: Future[CachedEntries[B]] | None = None
            if last is not None:
                chosen = self.newest(last, cluster, since=since)
            else:
                # Listing every backup's keys is mostly waiting for the store: the cached
                # entries are read and checked meanwhile.
                under = self.layout.manifests_under(cluster)
                if self.cache is not None and since is None:
                    early = pool.submit(reading.under, self.cache, under)
                chosen = self.committed(cluster, since=since)
                if self.cache is not None and since is None:
                    self.cache.forget_except(under, (b.manifest.key for b in chosen if b.manifest))
            preloaded = finished(early) if early is not None else None
            for start in range(0, len(chosen), page_size):
                page = chosen[start:start + page_size]
                found = self._read(page, pool, reading, preloaded)
                pins = dict(zip(((b.cluster, b.id) for b in page if b.pinned),
                                mapped(pool, self.pin_of, [b for b in page if b.pinned])))
                yield Listing(
                    # None: the manifest was deleted since the listing; the backup is gone.
                    tuple(m for m in found if m is not None and not isinstance(m, DamagedManifest)),
                    tuple(m for m in found if isinstance(m, DamagedManifest)),
                    {ref: pin for ref, pin in pins.items() if pin is not None},
                )

    def _read(self, page: Sequence[CommittedBackup], pool: ThreadPoolExecutor, reading: _Reading[B],
              preloaded: CachedEntries[B] | None) -> list[B | DamagedManifest | None]:
        """What ``page`` shows of each backup, in order: from the cache where it holds the listed
        version (from ``preloaded`` when the cache was read before the page), else read."""
        listed = [b.manifest for b in page if b.manifest is not None]
        cached: dict[str, B] = {}
        if preloaded is not None:
            cached = preloaded.lookup(listed)
        elif self.cache is not None and listed:
            cached = reading.lookup(self.cache, listed)
        return self._fill(page, cached, pool, reading.shown)

    def _fill(self, page: Sequence[CommittedBackup], cached: dict[str, B], pool: ThreadPoolExecutor,
              shown: Callable[[Manifest], B]) -> list[B | DamagedManifest | None]:
        """``page`` in order: what ``cached`` holds by manifest key, else read from the store
        (and cached) and made into what is shown."""
        missing = [b for b in page if b.manifest is None or b.manifest.key not in cached]
        fetched = dict(zip(((b.cluster, b.id) for b in missing),
                           mapped(pool, lambda b: self.read_manifest(b.cluster, b.id), missing)))
        if self.cache is not None:
            self.cache.remember((b.manifest, m) for b in missing
                                if b.manifest is not None and isinstance(m := fetched[(b.cluster, b.id)], Manifest))
        found: list[B | DamagedManifest | None] = []
        for b in page:
            if b.manifest is not None and b.manifest.key in cached:
                found.append(cached[b.manifest.key])
            else:
                read = fetched[(b.cluster, b.id)]
                found.append(shown(read) if isinstance(read, Manifest) else read)
        return found

    def scan(self, cluster: str | None = None, *, since: datetime | None = None,
             last: int | None = None) -> Listing[Manifest]:
        """Every committed backup (oldest first) and every damaged manifest, with the pins.

        A manifest that cannot be read does not stop the listing: it is reported in
        ``damaged`` with the reason, and its backup is never used.
        """
        pages = list(self.pages(cluster, since=since, last=last))
        return Listing(
            tuple(m for page in pages for m in page.backups),
            tuple(d for page in pages for d in page.damaged),
            {ref: pin for page in pages for ref, pin in page.pins.items()},
        )

    def manifests(self, cluster: str | None = None, *, since: datetime | None = None) -> Iterator[Manifest]:
        """Every committed backup (complete or failed) whose manifest is readable, oldest first.

        With ``since``, only backups started since then (to the second).
        """
        for page in self.pages(cluster, since=since):
            yield from page.backups

    def find(self, backup_id: str, cluster: str | None = None) -> Manifest:
        """The manifest of ``backup_id``; ``latest`` is the newest complete backup.

        ``latest`` needs ``cluster`` when the repository holds more than one cluster (a
        UsageError naming them): the newest backup of *any* cluster is never what is meant.

        A damaged manifest is never chosen as ``latest``; asked for by id, it is an
        IntegrityError that says why and how to delete it.
        """
        found = self.locate(backup_id, cluster)
        if isinstance(found, DamagedManifest):
            raise IntegrityError(f"{found.reason}; the backup cannot be used (remove it with "
                                 f"'lifeboat delete {found.id} --cluster {found.cluster}')")
        return found

    def locate(self, backup_id: str, cluster: str | None = None) -> Manifest | DamagedManifest:
        """Like :meth:`find`, but a damaged manifest asked for by id is returned (for ``delete``).

        By id it reads that backup's manifest in each cluster (one read when ``cluster`` is given).
        """
        if backup_id == "latest":
            return self.latest(cluster)
        check_backup_id(backup_id)
        clusters: Sequence[str] = (cluster,) if cluster else self.clusters()
        found = [m for m in (self.read_manifest(name, backup_id) for name in clusters) if m is not None]
        if not found:
            # Asked in one cluster, it may be another's: say whose (one more read per cluster, only on a miss).
            elsewhere = [name for name in self.clusters() if name != cluster
                         and self.read_manifest(name, backup_id) is not None] if cluster else []
            where = f" for cluster {cluster}" if cluster else ""
            hint = f"; it is a backup of cluster {', '.join(elsewhere)}" if elsewhere else " (see 'lifeboat list')"
            raise NotFound(f"backup {backup_id} not found in {self.store.url}{where}{hint}")
        if len(found) > 1:
            raise UsageError(f"backup {backup_id} exists for several clusters; pass --cluster")
        return found[0]

    def latest(self, cluster: str | None = None) -> Manifest:
        """The newest complete backup, reading manifests newest first from recent keys only.

        Backups started in the last :data:`LATEST_WINDOWS` are looked at first; only when none
        of them is complete does the search widen, finally to every backup. Damaged and failed
        backups are passed over.
        """
        cluster = cluster or self._only_cluster()
        now = self.clock.now()
        seen: set[tuple[str, str]] = set()
        for since in [now - window for window in LATEST_WINDOWS] + [None]:
            newest: Manifest | None = None
            for backup in reversed(self.committed(cluster, since=since)):
                if newest is not None and id_second(backup.id) != id_second(newest.id):
                    return newest
                if (backup.cluster, backup.id) in seen:
                    continue
                seen.add((backup.cluster, backup.id))
                manifest = self.read_manifest(backup.cluster, backup.id)
                if isinstance(manifest, Manifest) and manifest.status == BackupStatus.COMPLETE:
                    # Ids tell only the second: of backups started in the same one, the one
                    # started last (as prune orders them), whatever its random suffix.
                    if newest is None or started_time(manifest) > started_time(newest):
                        newest = manifest
            if newest is not None:
                return newest
        where = f" of cluster {cluster}" if cluster else ""
        raise NotFound(f"no complete backup{where} in {self.store.url}")

    def _only_cluster(self) -> str | None:
        """The one cluster with backups here; several make ``latest`` ambiguous (a UsageError)."""
        names = self.clusters()
        if len(names) > 1:  # only then are the clusters' backup keys listed, to see which have any
            names = tuple(name for name in names if self.committed(name))
        if len(names) > 1:
            raise UsageError(f"'latest' is ambiguous: {self.store.url} holds backups of clusters "
                             f"{', '.join(names)}; pass --cluster NAME (or set $LIFEBOAT_CLUSTER)")
        return names[0] if names else None

    def delete(self, backup: BackupRef) -> None:
        """Delete the backup's data objects first, then its manifest, then its pin or deletion
        claim (re-runnable): while the claim is there no pin can be written (see :mod:`.pins`)."""
        self._remove_data(backup.cluster, backup.id)
        self.store.delete(self.manifest_key(backup))
        self.store.delete(self.layout.pin_key(backup.cluster, backup.id))

    def claim_deletion(self, manifest: BackupRef, claim: DeletionClaim, stale_after: timedelta) -> str | None:
        """Take the backup for deletion by writing ``claim`` where its pin would be: None when
        taken, else why it must be left alone (pinned, or another prune deleting or done with it).

        A claim older than ``stale_after`` (by the store's clock) was left by an interrupted prune
        and is taken over.
        """
        key = self.layout.pin_key(manifest.cluster, manifest.id)
        try:
            self.store.put_bytes(key, claim.to_json(), create_only=True)
        except AlreadyExists:
            found = self._pin_record(key)
            if isinstance(found, Pin):
                return "pinned since planned"
            info = self.store.stat(key)
            if found is None or info is None or info.modified is None \
                    or self.clock.now() - info.modified < stale_after:
                return "being deleted by another prune"
            self.store.put_bytes(key, claim.to_json())
        if self.store.stat(self.manifest_key(manifest)) is None:
            self.store.delete(key)
            return "already deleted by another prune"
        return None

    def _pin_record(self, key: str) -> Pin | DeletionClaim | None:
        try:
            data = read_record(self.store, key, SMALL_RECORD_MAX, "pin")
        except NotFound:
            return None
        except IntegrityError as exc:
            return Pin.damaged(exc)
        return read_pin_record(data, where=f"{self.store.url}/{key}")

    def _remove_data(self, cluster: str, backup_id: str) -> None:
        """Remove what the backup's folder holds, but a manifest or pin kept there (format 1)."""
        kept = {self.layout.manifest_key(cluster, backup_id), self.layout.pin_key(cluster, backup_id)}
        for obj in list(self.store.list(backup_prefix(cluster, backup_id))):
            if obj.key not in kept:
                self.store.delete(obj.key)

    def pin(self, manifest: Manifest, pin: Pin) -> None:
        """Pin a committed backup (replacing an earlier pin's who/when/why).

        Refused (OperationFailed) while a prune deletes it, NotFound once it is gone: a pin
        never stays behind for a deleted backup (see :mod:`.pins`).
        """
        key = self.layout.pin_key(manifest.cluster, manifest.id)
        gone = NotFound(f"backup {manifest.id} of cluster {manifest.cluster} no longer exists")
        try:
            self.store.put_bytes(key, pin.to_json(), create_only=True)
        except AlreadyExists:
            found = self._pin_record(key)
            if isinstance(found, DeletionClaim):
                raise OperationFailed(
                    f"backup {manifest.id} of cluster {manifest.cluster} is being deleted by a prune "
                    f"(since {found.deleting_since}, by {found.deleting_by}); it was not pinned (if no prune runs, "
                    f"finish the deletion with 'lifeboat delete {manifest.id}')") from None
            if found is None:
                raise gone from None  # its deletion removed the claim just now
            self.store.put_bytes(key, pin.to_json())
        if self.store.stat(self.manifest_key(manifest)) is None:
            self.store.delete(key)
            raise gone

    def unpin(self, manifest: Manifest) -> bool:
        """Remove the pin; False when the backup was not pinned (a prune's claim is left alone)."""
        key = self.layout.pin_key(manifest.cluster, manifest.id)
        if not isinstance(self._pin_record(key), Pin):
            return False
        self.store.delete(key)
        return True

    def pin_of(self, backup: BackupRef) -> Pin | None:
        """The backup's pin, read now (not cached), or None (a prune's deletion claim is no pin)."""
        found = self._pin_record(self.layout.pin_key(backup.cluster, backup.id))
        return found if isinstance(found, Pin) else None

    def pins(self, cluster: str | None = None) -> dict[tuple[str, str], Pin]:
        """Every pin, by (cluster, backup id), from listings of keys."""
        found: dict[tuple[str, str], Pin] = {}
        for name, obj in list(self._commit_objects(cluster)):
            if name.is_pin:
                pin = self._pin_record(obj.key)  # None: unpinned while we listed
                if isinstance(pin, Pin):
                    found[(name.cluster, name.backup_id)] = pin
        return found

    def incomplete_uploads(self) -> list[IncompleteUpload]:
        """Unfinished writes of this repository's objects (live ones too), oldest first.

        Only under ``clusters/``, where every large object lies: a bucket shared with other
        tools keeps their uploads. Raises Unsupported when the store cannot list them.
        """
        return self.store.incomplete_uploads(CLUSTERS)

    def remove_incomplete(self, upload: IncompleteUpload) -> None:
        self.store.remove_incomplete(upload)

    def discard_objects(self, cluster: str, backup_id: str) -> bool:
        """Remove the data objects of a backup that was never committed (best effort).

        A backup whose manifest exists is left alone, and True returned: an interruption
        (SIGTERM) can land after the manifest was written but before the writer knew it.
        """
        if self.store.stat(self.layout.manifest_key(cluster, backup_id)) is not None:
            return True
        self._remove_data(cluster, backup_id)
        # A pin or deletion claim an interrupted delete left after the manifest.
        self.store.delete(self.layout.pin_key(cluster, backup_id))
        return False


def started_time(manifest: Manifest) -> datetime:
    """When the backup started, to the millisecond where its manifest says (an unreadable time: first)."""
    try:
        return datetime.fromisoformat(manifest.started_at.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)

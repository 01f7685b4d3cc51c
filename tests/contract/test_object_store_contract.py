"""The ObjectStore contract (lifeboat.store.base), run against every backend.

memory is the unit-test double, local a temp directory, s3 the real SeaweedFS server of the
session (``seaweed`` fixture) under a fresh prefix per test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lifeboat.errors import AlreadyExists, NotFound, UsageError
from lifeboat.store import ObjectStore, open_store
from lifeboat.store.local import TEMP_PREFIX
from lifeboat.store.s3 import PART_SIZE
from tests.support.seaweed import S3Endpoint

MiB = 1 << 20


@dataclass
class Backend:
    store: ObjectStore
    leftovers: Callable[[], list[str]]
    """Debris a failed write may leave behind outside the listing (temp files, pending uploads)."""


@pytest.fixture(params=["memory", "local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "memory":
        return Backend(open_store("memory://contract"), lambda: [])
    if request.param == "local":
        root = tmp_path / "repo"
        root.mkdir()  # made by a repository's marker, the only object written at its top
        store = open_store(f"file://{root}")

        def temp_files() -> list[str]:
            return [str(p) for p in root.rglob(f"{TEMP_PREFIX}*")] if root.exists() else []

        return Backend(store, temp_files)
    url = request.getfixturevalue("s3_repo")
    seaweed: S3Endpoint = request.getfixturevalue("seaweed")
    return Backend(open_store(url), seaweed.pending_multipart_uploads)


@pytest.fixture
def store(backend: Backend) -> ObjectStore:
    return backend.store


class SourceFailed(Exception):
    """Raised by a test's chunk iterator to simulate the producer failing midway."""


def pattern_chunks(total: int, chunk: int = MiB) -> Iterator[bytes]:
    """Deterministic, non-repeating-per-chunk content so misordered chunks are detected."""
    for offset in range(0, total, chunk):
        size = min(chunk, total - offset)
        seed = hashlib.sha256(offset.to_bytes(8, "big")).digest()
        yield (seed * (size // len(seed) + 1))[:size]


def digest(chunks: Iterator[bytes]) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    for c in chunks:
        h.update(c)
        n += len(c)
    return h.hexdigest(), n


def test_small_object_round_trips(store: ObjectStore) -> None:
    info = store.put_bytes("clusters/prod/format.json", b'{"version": 1}')

    assert info.key == "clusters/prod/format.json" and info.size == 14
    assert store.get_bytes("clusters/prod/format.json") == b'{"version": 1}'
    assert store.stat("clusters/prod/format.json") == info


def test_stream_larger_than_one_upload_part_round_trips(store: ObjectStore) -> None:
    total = 5 * PART_SIZE + 12345
    expected = digest(pattern_chunks(total))

    info = store.put_stream("b/snapshot.db.zst", pattern_chunks(total))

    assert info.size == total
    assert store.stat("b/snapshot.db.zst") == info
    assert digest(store.get_stream("b/snapshot.db.zst")) == expected


def test_get_stream_yields_chunks_no_larger_than_asked(store: ObjectStore) -> None:
    store.put_stream("obj", pattern_chunks(3 * MiB + 7, chunk=MiB // 3))

    sizes = [len(c) for c in store.get_stream("obj", chunk_size=MiB)]

    assert sum(sizes) == 3 * MiB + 7
    assert all(0 < s <= MiB for s in sizes)


def test_empty_stream_creates_empty_object(store: ObjectStore) -> None:
    info = store.put_stream("empty", iter(()))

    assert info.size == 0
    assert store.get_bytes("empty") == b""
    assert list(store.get_stream("empty")) == []


def test_put_replaces_an_existing_object(store: ObjectStore) -> None:
    store.put_bytes("k", b"old")
    store.put_stream("k", [b"ne", b"w"])

    assert store.get_bytes("k") == b"new"


def test_create_only_writes_when_absent(store: ObjectStore) -> None:
    store.put_bytes("backups/1/manifest.json", b"first", create_only=True)

    assert store.get_bytes("backups/1/manifest.json") == b"first"


def test_create_only_conflict_leaves_the_original(store: ObjectStore) -> None:
    store.put_bytes("backups/1/manifest.json", b"first", create_only=True)

    with pytest.raises(AlreadyExists):
        store.put_bytes("backups/1/manifest.json", b"second", create_only=True)

    assert store.get_bytes("backups/1/manifest.json") == b"first"


def failing_after(total: int) -> Iterator[bytes]:
    yield from pattern_chunks(total)
    raise SourceFailed("producer died")


def test_stream_failing_midway_leaves_no_object_and_no_debris(backend: Backend) -> None:
    store = backend.store

    with pytest.raises(SourceFailed):
        store.put_stream("b/partial.zst", failing_after(2 * PART_SIZE + MiB))

    assert store.stat("b/partial.zst") is None
    assert list(store.list("")) == []
    assert backend.leftovers() == []


def test_failed_replacement_keeps_the_previous_object(backend: Backend) -> None:
    store = backend.store
    store.put_bytes("b/obj", b"previous")

    with pytest.raises(SourceFailed):
        store.put_stream("b/obj", failing_after(PART_SIZE + MiB))

    assert store.get_bytes("b/obj") == b"previous"
    assert backend.leftovers() == []


def test_list_is_sorted_and_filtered_by_plain_string_prefix(store: ObjectStore) -> None:
    keys = ["b/2", "a/2", "a/10", "ab/x", "a/1", "a-z", "a/sub/deep"]
    for i, key in enumerate(keys):
        store.put_bytes(key, b"x" * i)

    assert [o.key for o in store.list()] == sorted(keys)
    assert [o.key for o in store.list("a/")] == ["a/1", "a/10", "a/2", "a/sub/deep"]
    assert [o.key for o in store.list("a")] == ["a-z", "a/1", "a/10", "a/2", "a/sub/deep", "ab/x"]
    assert [o.key for o in store.list("a/1")] == ["a/1", "a/10"]
    assert [(o.key, o.size) for o in store.list("ab")] == [("ab/x", 3)]


def test_list_after_a_name_returns_only_the_folders_entries_sorting_after_it(store: ObjectStore) -> None:
    keys = ["c/b/0001/m", "c/b/0001/s", "c/b/0002/m", "c/b/0002/p", "c/b/0002-x/m", "c/b/0003/m",
            "c/b/0004", "c/x", "d/0005/m"]
    for key in keys:
        store.put_bytes(key, b"x")

    assert [o.key for o in store.list("c/b/", after="0002")] == ["c/b/0002-x/m", "c/b/0003/m", "c/b/0004"]
    assert [o.key for o in store.list("c/b/", after="0002-")] == ["c/b/0002-x/m", "c/b/0003/m", "c/b/0004"]
    assert [o.key for o in store.list("c/b/", after="00020")] == ["c/b/0003/m", "c/b/0004"]
    assert [o.key for o in store.list("c/b/", after="0003/m")] == ["c/b/0004"]
    assert [o.key for o in store.list("c/", after="b")] == ["c/x"]
    assert [o.key for o in store.list("c/b/", after="9")] == []
    assert [o.key for o in store.list("", after="c")] == ["d/0005/m"]
    assert [o.key for o in store.list("c/b/", after="0")] == sorted(keys[:7])
    with pytest.raises(UsageError):
        list(store.list("c/b", after="0002"))


def test_folders_name_one_level_below_a_prefix(store: ObjectStore) -> None:
    for key in ["clusters/prod/backups/1/m", "clusters/prod/backups/2/m", "clusters/dev/backups/1/m",
                "clusters/stray", "marker.json"]:
        store.put_bytes(key, b"x")

    assert store.folders("clusters/") == ("dev", "prod")
    assert store.folders("clusters/prod/backups/") == ("1", "2")
    assert store.folders("") == ("clusters",)
    assert store.folders("nothing/here/") == ()
    with pytest.raises(UsageError):
        store.folders("clusters")


def test_list_and_stat_say_when_each_object_was_written(store: ObjectStore) -> None:
    # Stamped by the store's own clock (the S3 server's here, on this machine): prune measures
    # an uncommitted backup's age by it.
    before = datetime.now(timezone.utc) - timedelta(minutes=2)
    store.put_bytes("w/small", b"x")
    store.put_stream("w/streamed", pattern_chunks(MiB))
    after = datetime.now(timezone.utc) + timedelta(minutes=2)
    listed = {o.key: o.modified for o in store.list("w/")}
    stated = {key: info.modified for key in listed if (info := store.stat(key)) is not None}
    assert set(listed) == set(stated) == {"w/small", "w/streamed"}
    for moment in (*listed.values(), *stated.values()):
        assert moment is not None and moment.utcoffset() is not None and before <= moment <= after


def test_list_of_an_unused_prefix_is_empty(store: ObjectStore) -> None:
    store.put_bytes("a/1", b"x")

    assert list(store.list("zzz/")) == []
    assert list(store.list("a/1/")) == []


def test_delete_removes_and_is_idempotent(store: ObjectStore) -> None:
    store.put_bytes("a/b/c", b"x")
    store.put_bytes("a/keep", b"y")

    store.delete("a/b/c")
    store.delete("a/b/c")
    store.delete("never/existed")

    assert store.stat("a/b/c") is None
    assert [o.key for o in store.list()] == ["a/keep"]
    with pytest.raises(NotFound):
        store.get_bytes("a/b/c")


def test_delete_many_removes_exactly_the_keys_named_across_batches(store: ObjectStore) -> None:
    names = [f"c/segments/{i:05d}" for i in range(1005)]  # more than one S3 request's 1,000
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: store.put_bytes(name, b"x"), [*names, "c/chain.json", "c/segments0"]))

    store.delete_many([*names[:1003], "c/segments/never-existed"])
    store.delete_many([])

    assert [o.key for o in store.list("c/")] == ["c/chain.json", "c/segments/01003", "c/segments/01004", "c/segments0"]


def test_ranges_of_an_object_read_in_parallel_join_to_the_object(store: ObjectStore) -> None:
    data = bytes(range(256)) * 40_000  # 10 MB
    store.put_stream("big/obj", (data[i:i + MiB] for i in range(0, len(data), MiB)))
    ranges = [(start, start + 3 * MiB) for start in range(0, len(data), 3 * MiB)]

    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda r: store.get_range("big/obj", *r), ranges))

    assert b"".join(parts) == data
    assert len(parts[-1]) == len(data) % (3 * MiB)  # the last range is cut at the object's end
    # bytes, or a view of the client's own buffer (no copy) that no reader can change
    assert all(isinstance(p, bytes) or (isinstance(p, memoryview) and p.readonly) for p in parts)
    assert store.get_range("big/obj", 5, 9) == data[5:9]
    assert store.get_range("big/obj", len(data) - 2, len(data) + 100) == data[-2:]
    assert store.get_range("big/obj", 7, 7) == b""
    with pytest.raises(NotFound):
        store.get_range("big/missing", 0, 10)


def test_missing_object_raises_not_found_before_iteration(store: ObjectStore) -> None:
    with pytest.raises(NotFound):
        store.get_bytes("no/such/object")
    with pytest.raises(NotFound):
        store.get_stream("no/such/object")
    assert store.stat("no/such/object") is None


def test_keys_with_allowed_punctuation_round_trip(store: ObjectStore) -> None:
    key = "clusters/prod-1/backups/2024-05-01T10:00:00Z_a+b=c@d,e.f/manifest.json"

    store.put_bytes(key, b"x")

    assert store.get_bytes(key) == b"x"
    assert [o.key for o in store.list("clusters/prod-1/")] == [key]


BAD_KEYS = ["../x", "/abs", "a/../b", "a//b", "", "a/", "./a", "sp ace", "a\\b", "\x00"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_are_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(UsageError):
        store.put_bytes(key, b"x")
    with pytest.raises(UsageError):
        store.put_stream(key, [b"x"])
    with pytest.raises(UsageError):
        store.get_bytes(key)
    with pytest.raises(UsageError):
        store.stat(key)
    with pytest.raises(UsageError):
        store.delete(key)


@pytest.mark.parametrize("prefix", ["../", "/abs", "a/../", "a//"])
def test_invalid_prefixes_are_rejected(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(UsageError):
        list(store.list(prefix))



def test_concurrent_create_only_writers_have_exactly_one_winner(store: ObjectStore) -> None:
    def attempt(i: int) -> int | None:
        try:
            store.put_bytes("race/manifest.json", f"writer-{i}".encode(), create_only=True)
            return i
        except AlreadyExists:
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        winners = [i for i in pool.map(attempt, range(8)) if i is not None]

    assert len(winners) == 1
    assert store.get_bytes("race/manifest.json") == f"writer-{winners[0]}".encode()


def test_listings_past_one_page_of_1000_keys_miss_nothing(store: ObjectStore) -> None:
    """S3 answers 1,000 keys a page: every listing form must follow the pages to the end."""
    folders = [f"f{i:04d}" for i in range(1100)]
    keys = [f"p/{f}/m" for f in folders] + [f"p/{folders[7]}/x{i:04d}" for i in range(1050)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: store.put_bytes(key, b"x"), keys))

    assert [o.key for o in store.list("p/")] == sorted(keys)
    assert store.folders("p/") == tuple(folders)
    assert [o.key for o in store.list("p/", after=folders[5])] == sorted(k for k in keys if k > f"p/{folders[6]}")
    assert [o.key for o in store.list(f"p/{folders[7]}/x")] == sorted(k for k in keys if "/x" in k)


def test_punctuation_in_prefixes_and_listing_starts_is_taken_literally(store: ObjectStore) -> None:
    """'+' is a space in a form-encoded query, ':' '@' ',' '=' are reserved in URLs: a store or client
    that decoded them would list the wrong folder or start from the wrong place."""
    keys = ["c/a+b/1", "c/a+b=c/1", "c/a,b@c:d/1", "c/a=b/1"]
    for key in keys:
        store.put_bytes(key, b"x")

    assert [o.key for o in store.list("c/a+b")] == ["c/a+b/1", "c/a+b=c/1"]
    assert [o.key for o in store.list("c/", after="a+b")] == ["c/a+b=c/1", "c/a,b@c:d/1", "c/a=b/1"]
    assert store.folders("c/") == ("a+b", "a+b=c", "a,b@c:d", "a=b")
    assert store.folders("c/a,b@c:d/") == ()
    assert store.stat("c/a,b@c:d/1") is not None and store.get_range("c/a+b=c/1", 0, 1) == b"x"
    store.delete("c/a+b/1")
    assert store.stat("c/a+b/1") is None and store.stat("c/a+b=c/1") is not None

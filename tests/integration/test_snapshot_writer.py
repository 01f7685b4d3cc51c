"""The bbolt writer, judged by Go's bbolt (Tx.Check and its own reading), etcdutl and our reader.

Sources are made by Go's bbolt itself (any shape: nested and inline buckets, overflow
pages, several page sizes) or saved from a real etcd; every file the writer produces must
pass Go's ``Tx.Check``, read back row for row through Go's bbolt, and get the same
``snapshot status`` from etcdutl 3.5.1 as from lifeboat.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifeboat.errors import IntegrityError, NoRoom, SnapshotFormatError, UsageError
from lifeboat.snapshot import check_trailer, iter_latest, read_meta, snapshot_status
from lifeboat.snapshot.check import check_snapshot
from lifeboat.snapshot import writer as writer_module
from lifeboat.snapshot.mvcc import encode_revision
from lifeboat.restore.content import keeps_committed_rows, keeps_snapshot_pages, keyspace_digest, newest_revision
from lifeboat.restore.native import commit_record, undo_commit
from lifeboat.restore.steps import _compare_committed
from lifeboat.snapshot.bbolt import BoltFile
from lifeboat.snapshot.writer import (
    BucketChanges, Overwritten, bump_restored_db, bump_revision, commit_in_place, commit_member_db, snapshot_sha256,
    write_db,
)
from tests.integration.snapshot_corpus import Corpus, etcdctl_get_all, etcdutl_status
from tests.integration.test_snapshot_reader import corpus_for
from tests.support.binaries import EtcdRelease
from tests.support.bolt_oracle import BoltOracle, Dump
from tests.support.etcd import EtcdMember

pytestmark = pytest.mark.integration

KEY, META = b"key", b"meta"


def rev(main: int, sub: int = 0) -> bytes:
    return encode_revision(main, sub)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_sound(oracle: BoltOracle, path: Path) -> None:
    """Go's Tx.Check and our structural check pass, and etcdutl's status equals ours."""
    assert oracle.check(path) == []
    assert check_snapshot(path).problems == ()
    assert etcdutl_status(path) == snapshot_status(path).to_etcdutl_json()
    if check_trailer(path).present:
        check_trailer(path).require_match(path)


def rows(dump: dict[str, Dump], bucket: bytes) -> list[tuple[bytes, bytes]]:
    return [(bytes.fromhex(k), bytes.fromhex(v)) for k, v in dump[bucket.hex()]["rows"]]


@pytest.fixture
def etcd_shaped(made_etcd_shaped: Path, tmp_path: Path) -> Path:
    """This test's own copy of :func:`made_etcd_shaped`."""
    return Path(shutil.copy(made_etcd_shaped, tmp_path / "source.db"))


@pytest.fixture(scope="module")
def made_etcd_shaped(bolt_oracle: BoltOracle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Go-made db shaped like etcd's: MVCC rows (some with overflow values), meta, members; made once."""
    first = [["bucket", [KEY]], ["bucket", [META]], ["bucket", [b"members"]],
             ["put", [META], b"consistent_index", struct.pack(">Q", 77)],
             ["put", [b"members"], b"8e9e05c52164694d", b'{"name":"m0"}']]
    history = [["put", [KEY], rev(i), b"\x0a\x03k%02d" % (i % 50) + b"v" * (i % 200)]
               for i in range(2, 4000)]
    big = [["put", [KEY], rev(4000 + i), b"\x0a\x03big" + bytes([i]) * 9000] for i in range(3)]
    tomb = [["put", [KEY], rev(4003) + b"t", b"\x0a\x03k07"]]
    return bolt_oracle.create(tmp_path_factory.mktemp("etcd-shaped") / "source.db", [first, history, big + tomb])


# -- the revision bump -------------------------------------------------------------------------


def test_bump_writes_one_empty_row_and_schedules_compaction_there(
    bolt_oracle: BoltOracle, etcd_shaped: Path, tmp_path: Path
) -> None:
    before = bolt_oracle.dump(etcd_shaped)
    result = bump_revision(etcd_shaped, tmp_path / "bumped.db", 1_000_000_000)

    assert (result.old_revision, result.new_revision) == (4003, 1_000_004_003)
    after = bolt_oracle.dump(tmp_path / "bumped.db")
    assert rows(after, KEY) == rows(before, KEY) + [(rev(1_000_004_003), b"")]
    assert dict(rows(after, META)) == {
        **dict(rows(before, META)), b"scheduledCompactRev": rev(1_000_004_003),
    }
    assert after[b"members".hex()] == before[b"members".hex()]
    assert snapshot_status(tmp_path / "bumped.db").revision == 1_000_004_003
    assert read_meta(tmp_path / "bumped.db").scheduled_compact_revision == 1_000_004_003
    assert_sound(bolt_oracle, tmp_path / "bumped.db")


def test_bumped_file_carries_a_trailer_only_when_asked(etcd_shaped: Path, tmp_path: Path) -> None:
    with_trailer = bump_revision(etcd_shaped, tmp_path / "a.db", 5).written
    without = bump_revision(etcd_shaped, tmp_path / "b.db", 5, trailer=False).written

    assert check_trailer(tmp_path / "a.db").matches is True
    assert with_trailer.file_size == (tmp_path / "a.db").stat().st_size == without.db_size + 32
    assert not check_trailer(tmp_path / "b.db").present
    assert with_trailer.db_sha256 == check_trailer(tmp_path / "b.db").db_sha256
    assert without.db_sha256 is None


def test_bump_past_the_largest_int64_revision_is_refused(
    bolt_oracle: BoltOracle, tmp_path: Path
) -> None:
    source = bolt_oracle.create(tmp_path / "near-max.db", [[
        ["put", [KEY], rev((1 << 63) - 10), b"\x0a\x01a"], ["bucket", [META]],
    ]])
    digest = sha256(source)
    with pytest.raises(UsageError, match="largest revision"):
        bump_revision(source, tmp_path / "out.db", 10)
    assert bump_revision(source, tmp_path / "out.db", 9).new_revision == (1 << 63) - 1
    assert sha256(source) == digest


@pytest.mark.parametrize("amount", [0, -5])
def test_bump_must_be_positive(etcd_shaped: Path, tmp_path: Path, amount: int) -> None:
    with pytest.raises(UsageError):
        bump_revision(etcd_shaped, tmp_path / "out.db", amount)
    assert not (tmp_path / "out.db").exists()


def test_bump_of_saved_etcd_snapshots_agrees_with_etcdutl_and_keeps_every_key(
    bolt_oracle: BoltOracle, release: EtcdRelease, tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    corpus: Corpus = corpus_for(release, tmp_path_factory)
    for shot in (corpus.empty, corpus.busy):
        digest = sha256(shot.path)
        out = tmp_path / f"{shot.path.stem}-bumped.db"
        result = bump_revision(shot.path, out, 1_000_000_000)

        assert result.new_revision == snapshot_status(shot.path).revision + 1_000_000_000
        assert list(iter_latest(out)) == list(iter_latest(shot.path))
        assert_sound(bolt_oracle, out)
        assert sha256(shot.path) == digest


# -- appends, puts and deletes ---------------------------------------------------------------


def test_appended_rows_follow_every_existing_row(
    bolt_oracle: BoltOracle, etcd_shaped: Path, tmp_path: Path
) -> None:
    appended = [(rev(5000 + i), b"\x0a\x02ap" + b"x" * (i % 700)) for i in range(60_000)]
    written = write_db(etcd_shaped, tmp_path / "out.db", [
        BucketChanges(KEY, appends=iter(appended)),
        BucketChanges(META, puts={b"consistent_index": struct.pack(">Q", 99)}),
    ])

    dump = bolt_oracle.dump(tmp_path / "out.db")
    assert rows(dump, KEY) == rows(bolt_oracle.dump(etcd_shaped), KEY) + appended
    assert dict(rows(dump, META))[b"consistent_index"] == struct.pack(">Q", 99)
    assert written.high_water * written.page_size == written.db_size
    assert_sound(bolt_oracle, tmp_path / "out.db")


def test_a_snapshot_committed_in_place_equals_the_written_copy_with_its_trailer(
    bolt_oracle: BoltOracle, etcd_shaped: Path, tmp_path: Path
) -> None:
    snapshot = bump_revision(etcd_shaped, tmp_path / "snapshot.db", 1).written.path  # with a trailer
    appended = [(rev(1_000_005_000 + i), b"\x0a\x02ap" + b"x" * (i % 5000)) for i in range(3_000)]
    changes = [BucketChanges(KEY, appends=appended), BucketChanges(META, puts={b"consistent_index": b"\0" * 8})]
    copy = write_db(snapshot, tmp_path / "copy.db", changes)

    written = commit_in_place(snapshot, changes)

    assert sha256(snapshot) == sha256(copy.path) and written.db_sha256 == copy.db_sha256
    assert written.file_size == snapshot.stat().st_size
    assert_sound(bolt_oracle, snapshot)


def test_a_trailer_hashed_through_a_small_reused_buffer_matches_the_file(
    etcd_shaped: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "_HASH_CHUNK", 3 * 4096 + 100)  # many reads, none page-aligned
    snapshot = bump_revision(etcd_shaped, tmp_path / "snapshot.db", 1).written.path
    before = newest_revision(snapshot)
    appended = [(rev(before + 1 + i), b"\x0a\x02ap" + b"z" * (i * 37 % 7000)) for i in range(500)]
    copy = write_db(snapshot, tmp_path / "copy.db", [BucketChanges(KEY, appends=appended)])

    written = commit_in_place(snapshot, [BucketChanges(KEY, appends=appended)])

    for path, digest in ((snapshot, written.db_sha256), (copy.path, copy.db_sha256)):
        trailer = check_trailer(path)
        assert trailer.matches is True and trailer.db_sha256 == digest


def test_a_snapshot_changed_on_disk_since_its_fetch_is_refused_not_certified_by_a_new_trailer(
    etcd_shaped: Path, tmp_path: Path
) -> None:
    """The commit writes a new trailer from the bytes it reads: it checks the snapshot's own ones
    against the snapshot's trailer in that same pass (drills, k8s, --restore-with tool)."""
    snapshot = bump_revision(etcd_shaped, tmp_path / "snapshot.db", 1).written.path
    before = newest_revision(snapshot)
    appended = [(rev(before + 1 + i), b"\x0a\x02ap" + b"w" * 700) for i in range(1_000)]
    with snapshot.open("r+b") as f:  # one bit, in a page the commit neither reads nor rewrites
        f.seek(snapshot.stat().st_size // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0x10]))

    # A copy of it (a drill's point in time) from a source this process had checked: not certified either.
    with pytest.raises(IntegrityError, match=r"snapshot\.db: the snapshot's pages changed since it was fetched and "
                       r"checked \(their sha256 no longer matches its trailer\); nothing was written from it"):
        write_db(snapshot, tmp_path / "point.db", [BucketChanges(KEY, appends=appended)], source_checked=True)
    assert not [p.name for p in tmp_path.iterdir() if "point.db" in p.name]  # nor its temporary file

    with pytest.raises(IntegrityError, match=r"snapshot\.db: the snapshot's pages changed since it was fetched and "
                       r"checked \(their sha256 no longer matches its trailer\); nothing was committed"):
        commit_in_place(snapshot, [BucketChanges(KEY, appends=appended)])
    assert newest_revision(snapshot) == before  # its meta still names the old tree


def test_a_commit_in_place_interrupted_before_its_meta_is_at_the_old_revision_without_a_trailer(
    etcd_shaped: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a killed replay leaves: the old tree, which no longer looks like a checked snapshot;
    writing again completes it."""
    snapshot = bump_revision(etcd_shaped, tmp_path / "snapshot.db", 1).written.path
    before = newest_revision(snapshot)
    appended = [(rev(before + 1 + i), b"\x0a\x02ap" + b"y" * 900) for i in range(2_000)]
    expected = write_db(snapshot, tmp_path / "copy.db", [BucketChanges(KEY, appends=appended)])

    def killed(fd: int) -> None:  # at the fsync of the pages and trailer: the meta is not written yet
        raise KeyboardInterrupt

    monkeypatch.setattr(writer_module.os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        commit_in_place(snapshot, [BucketChanges(KEY, appends=appended)])
    monkeypatch.undo()

    assert newest_revision(snapshot) == before
    assert check_trailer(snapshot).matches is not True
    commit_in_place(snapshot, [BucketChanges(KEY, appends=appended)])
    assert newest_revision(snapshot) == before + 2_000 and sha256(snapshot) == sha256(expected.path)


def test_appends_grow_an_inline_bucket_into_a_tree_of_pages(
    bolt_oracle: BoltOracle, tmp_path: Path
) -> None:
    source = bolt_oracle.create(tmp_path / "tiny.db", [[["put", [b"b"], b"a", b"1"]]])
    appended = [(b"k%06d" % i, b"v" * 50) for i in range(20_000)]
    write_db(source, tmp_path / "out.db", [BucketChanges(b"b", appends=appended)])

    assert rows(bolt_oracle.dump(tmp_path / "out.db"), b"b") == [(b"a", b"1")] + appended
    assert_sound(bolt_oracle, tmp_path / "out.db")


def test_puts_and_deletes_land_anywhere_in_the_tree(
    bolt_oracle: BoltOracle, etcd_shaped: Path, tmp_path: Path
) -> None:
    before = dict(rows(bolt_oracle.dump(etcd_shaped), KEY))
    puts = {rev(1): b"first", rev(2000): b"replaced" * 2000, rev(2500, 1): b"between",
            rev(4002): b"", rev(9000): b"last"}
    deletes = frozenset({rev(3), rev(3999), rev(4003) + b"t", b"absent"})
    write_db(etcd_shaped, tmp_path / "out.db", [BucketChanges(KEY, puts=puts, deletes=deletes)])

    expected = {**{k: v for k, v in before.items() if k not in deletes}, **puts}
    assert rows(bolt_oracle.dump(tmp_path / "out.db"), KEY) == sorted(expected.items())
    assert_sound(bolt_oracle, tmp_path / "out.db")


def test_deleting_every_row_leaves_an_empty_bucket(
    bolt_oracle: BoltOracle, etcd_shaped: Path, tmp_path: Path
) -> None:
    every = frozenset(k for k, _ in rows(bolt_oracle.dump(etcd_shaped), KEY))
    write_db(etcd_shaped, tmp_path / "out.db", [BucketChanges(KEY, deletes=every)])

    assert rows(bolt_oracle.dump(tmp_path / "out.db"), KEY) == []
    assert bolt_oracle.check(tmp_path / "out.db") == []
    assert snapshot_status(tmp_path / "out.db").revision == 0


# -- any shape: a property test --------------------------------------------------------------

_names = st.sampled_from([b"alpha", b"b", b"members", b"zz"])
# Keys "r000000", "r000003", ...: a drawn key "r%06d" hits an existing row or falls between two.
_row_keys = st.builds(lambda i: b"r%06d" % i, st.integers(0, 2500))
_keys = st.one_of(_row_keys, st.binary(min_size=1, max_size=12)).filter(
    lambda k: not k.startswith(b"\xff")
)
_values = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda n, b: bytes([b]) * n, st.integers(900, 9000), st.integers(0, 255)),
)


@st.composite
def _bucket_rows(draw: st.DrawFn) -> dict[bytes, bytes]:
    """Enough rows for trees of several levels, plus a few drawn ones of any size."""
    count = draw(st.sampled_from([0, 3, 150, 800]))
    rows = {b"r%06d" % (3 * i): b"%d" % i * (i % 7) for i in range(count)}
    rows.update(draw(st.dictionaries(_keys, _values, max_size=20)))
    return rows


@st.composite
def _case(draw: st.DrawFn) -> dict[str, Any]:
    buckets = draw(st.dictionaries(_names, _bucket_rows(), min_size=1, max_size=3))
    nested = draw(st.dictionaries(_keys, _bucket_rows(), max_size=2))
    home = draw(st.sampled_from(sorted(buckets)))
    nested = {n: r for n, r in nested.items() if n not in buckets[home]}
    changes = []
    for name in draw(st.lists(st.sampled_from(sorted(buckets)), unique=True)):
        puts = draw(st.dictionaries(_keys, _values, max_size=40))
        deletes = draw(st.frozensets(_keys, max_size=40)) - set(puts)
        if name == home:
            puts = {k: v for k, v in puts.items() if k not in nested}
            deletes -= set(nested)
        count = draw(st.sampled_from([0, 1, 40, 400]))
        size = draw(st.sampled_from([3, 60, 5000]))
        appends = [(b"\xff\xff" + struct.pack(">I", i), b"%d" % i * size) for i in range(count)]
        changes.append((name, puts, deletes, appends))
    page_size = draw(st.sampled_from([1024, 4096]))
    return {"buckets": buckets, "nested": nested, "home": home, "changes": changes,
            "page_size": page_size, "freelist": draw(st.booleans())}


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(case=_case())
def test_any_changes_to_any_bucket_shape_read_back_through_go_bbolt(
    bolt_oracle: BoltOracle, tmp_path_factory: pytest.TempPathFactory, case: dict[str, Any]
) -> None:
    work = tmp_path_factory.mktemp("prop")
    ops: list[list[Any]] = []
    for name, bucket_rows in case["buckets"].items():
        ops.append(["bucket", [name]])
        ops += [["put", [name], k, v] for k, v in bucket_rows.items()]
    for inner, inner_rows in case["nested"].items():
        ops.append(["bucket", [case["home"], inner]])
        ops += [["put", [case["home"], inner], k, v] for k, v in inner_rows.items()]
    source = bolt_oracle.create(work / "source.db", [ops], page_size=case["page_size"],
                                no_freelist_sync=not case["freelist"])
    digest = sha256(source)
    before = bolt_oracle.dump(source)

    write_db(source, work / "out.db", [
        BucketChanges(name, puts=puts, deletes=deletes, appends=iter(appends))
        for name, puts, deletes, appends in case["changes"]
    ])

    expected = before
    for name, puts, deletes, appends in case["changes"]:
        current = {k: v for k, v in rows(before, name) if k not in deletes}
        current.update(puts)
        expected[name.hex()]["rows"] = [
            [k.hex(), v.hex()] for k, v in sorted(current.items()) + appends
        ]
    assert bolt_oracle.dump(work / "out.db") == expected
    assert_sound(bolt_oracle, work / "out.db")
    assert sha256(source) == digest


# -- bad input: refused, the source untouched, nothing left behind ---------------------------


def _only(directory: Path, *names: str) -> None:
    assert sorted(p.name for p in directory.iterdir()) == sorted(names)


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ([BucketChanges(KEY, appends=[(rev(9001), b"a"), (rev(9000), b"b")])], UsageError,
         "strictly ascending"),
        ([BucketChanges(KEY, appends=[(rev(4003), b"a")])], UsageError, "not greater"),
        ([BucketChanges(KEY, puts={rev(9000): b"x"}, appends=[(rev(8000), b"a")])], UsageError,
         "not greater"),
        ([BucketChanges(b"nope", puts={b"a": b"b"})], UsageError, "no bucket"),
        ([BucketChanges(KEY), BucketChanges(KEY)], UsageError, "same bucket"),
        ([BucketChanges(META, puts={b"x": b"1"}, deletes=frozenset({b"x"}))], UsageError,
         "both put and deleted"),
        ([BucketChanges(META, puts={b"": b"1"})], UsageError, "empty"),
    ],
)
def test_bad_changes_are_refused_and_nothing_is_written(
    etcd_shaped: Path, tmp_path: Path, changes: list[BucketChanges], error: type, message: str
) -> None:
    digest = sha256(etcd_shaped)
    with pytest.raises(error, match=message):
        write_db(etcd_shaped, tmp_path / "out.db", changes)
    assert sha256(etcd_shaped) == digest
    _only(tmp_path, "source.db")


def test_a_nested_bucket_cannot_be_overwritten_as_a_row(
    bolt_oracle: BoltOracle, tmp_path: Path
) -> None:
    source = bolt_oracle.create(tmp_path / "source.db", [[["put", [b"b", b"inner"], b"k", b"v"]]])
    with pytest.raises(UsageError, match="nested bucket"):
        write_db(source, tmp_path / "out.db", [BucketChanges(b"b", puts={b"inner": b"x"})])
    _only(tmp_path, "source.db")


def test_truncated_source_is_refused(etcd_shaped: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(etcd_shaped.read_bytes()[: 40 * 4096])
    with pytest.raises(SnapshotFormatError, match="truncated"):
        bump_revision(truncated, tmp_path / "out.db", 10)
    assert not (tmp_path / "out.db").exists()


def test_a_file_that_is_not_bbolt_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all " * 1000)
    with pytest.raises(SnapshotFormatError, match="not a bbolt database"):
        write_db(junk, tmp_path / "out.db", [BucketChanges(KEY)])
    assert not (tmp_path / "out.db").exists()


def test_an_unknown_page_size_is_named(bolt_oracle: BoltOracle, tmp_path: Path) -> None:
    from lifeboat.snapshot.bbolt import META, fnv64a

    source = bolt_oracle.create(tmp_path / "source.db", [[["put", [b"b"], b"a", b"1"]]])
    raw = bytearray(source.read_bytes())
    for offset in (16, 4096 + 16):
        fields = list(META.unpack_from(raw, offset))
        fields[2] = 3000
        body = META.pack(*fields)[:56]
        raw[offset : offset + 64] = body + struct.pack("<Q", fnv64a(body))
    source.write_bytes(bytes(raw))
    with pytest.raises(SnapshotFormatError, match="page size 3000"):
        write_db(source, tmp_path / "out.db", [BucketChanges(b"b")])


def test_a_source_whose_trailer_does_not_match_is_refused(
    etcd_shaped: Path, tmp_path: Path
) -> None:
    bump_revision(etcd_shaped, tmp_path / "with-trailer.db", 1)
    damaged = tmp_path / "damaged.db"
    raw = bytearray((tmp_path / "with-trailer.db").read_bytes())
    raw[-1] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="does not match"):
        bump_revision(damaged, tmp_path / "out.db", 1)
    assert not (tmp_path / "out.db").exists()


def test_a_source_the_caller_checked_is_not_hashed_again(
    etcd_shaped: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bump_revision(etcd_shaped, tmp_path / "with-trailer.db", 1)
    hashed: list[Path] = []
    real = writer_module.check_trailer
    monkeypatch.setattr(writer_module, "check_trailer", lambda path: hashed.append(Path(path)) or real(path))
    change = [BucketChanges(KEY, appends=[(rev(5000), b"\x0a\x01z")])]
    write_db(tmp_path / "with-trailer.db", tmp_path / "checked.db", change, source_checked=True)
    assert hashed == [] and newest_revision(tmp_path / "checked.db") == 5000
    write_db(tmp_path / "with-trailer.db", tmp_path / "unchecked.db", change)
    assert hashed == [tmp_path / "with-trailer.db"]


def test_the_source_cannot_be_its_own_destination(etcd_shaped: Path) -> None:
    digest = sha256(etcd_shaped)
    with pytest.raises(UsageError, match="must not replace its source"):
        bump_revision(etcd_shaped, etcd_shaped, 1)
    assert sha256(etcd_shaped) == digest


def test_not_enough_disk_is_found_before_writing(
    etcd_shaped: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = shutil.disk_usage(tmp_path)
    needed = etcd_shaped.stat().st_size
    monkeypatch.setattr(
        "lifeboat.snapshot.writer.shutil.disk_usage",
        lambda _path: real._replace(free=needed // 2),
    )
    with pytest.raises(NoRoom, match="not enough disk space"):
        bump_revision(etcd_shaped, tmp_path / "out.db", 1)
    _only(tmp_path, "source.db")


# -- etcd itself on a bumped file ------------------------------------------------------------


def restore_with_stock_tool(release: EtcdRelease, snapshot: Path, member: EtcdMember) -> None:
    """etcdutl (3.5) or etcdctl (3.4) snapshot restore, with the hash check left on."""
    tool = release.etcdutl or release.etcdctl
    subprocess.run(
        [str(tool), "snapshot", "restore", str(snapshot), f"--name={member.name}",
         f"--data-dir={member.data_dir}", f"--initial-cluster={member.name}={member.peer_url}",
         "--initial-cluster-token=bumped", f"--initial-advertise-peer-urls={member.peer_url}"],
        check=True, capture_output=True, timeout=120, env=dict(os.environ, ETCDCTL_API="3"),
    )


def header_revision(member: EtcdMember) -> int:
    return int(json.loads(member.etcdctl("get", "none", "-w", "json"))["header"]["revision"])


def test_etcd_restores_and_serves_a_bumped_snapshot(
    release: EtcdRelease, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    shot = corpus_for(release, tmp_path_factory).busy
    bumped = bump_revision(shot.path, tmp_path / "bumped.db", 1_000_000_000)
    member = EtcdMember(release, "m0", tmp_path / "etcd")
    restore_with_stock_tool(release, tmp_path / "bumped.db", member)
    member.start(f"m0={member.peer_url}", "bumped", "new")
    try:
        member.wait_healthy()
        assert etcdctl_get_all(member) == shot.keys
        assert header_revision(member) == bumped.new_revision
        watch = subprocess.run(
            [str(release.etcdctl), f"--endpoints={member.client_url}", "watch", "--prefix",
             f"--rev={bumped.old_revision}", "/registry/"],
            capture_output=True, text=True, timeout=20, env=dict(os.environ, ETCDCTL_API="3"),
        )
        assert "required revision has been compacted" in watch.stdout + watch.stderr

        member.etcdctl("put", "/after/restore", "written")
        assert header_revision(member) == bumped.new_revision + 1
        member.stop()
        member.start(f"m0={member.peer_url}", "bumped", "new")
        member.wait_healthy()
        assert member.etcdctl("get", "/after/restore", "--print-value-only").strip() == "written"
        assert header_revision(member) == bumped.new_revision + 1
    finally:
        member.stop()


def test_a_restored_members_db_is_bumped_in_place_keeping_its_rows_owner_and_mode(
    release: EtcdRelease, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    shot = corpus_for(release, tmp_path_factory).busy
    member = EtcdMember(release, "m0", tmp_path / "etcd")
    restore_with_stock_tool(release, shot.path, member)
    db = member.data_dir / "member" / "snap" / "db"
    revision = snapshot_status(shot.path).revision
    os.chmod(db, 0o640)
    before = keyspace_digest(db, revision)
    # The stock tool left bucket 'key' as the snapshot had it: a restore compares pages, not rows.
    assert keeps_snapshot_pages(shot.path, db)
    assert newest_revision(db) == revision

    result = bump_restored_db(db, 1_000_000_000)

    assert (result.old_revision, result.new_revision) == (revision, revision + 1_000_000_000)
    assert keyspace_digest(db, revision) == before  # etcdctl 3.4's restore compacted nothing
    assert not keeps_snapshot_pages(shot.path, db)  # the bump row is in bucket 'key' now
    assert snapshot_status(db).revision == revision + 1_000_000_000
    assert oct(db.stat().st_mode & 0o777) == oct(0o640)
    assert check_snapshot(db).problems == ()
    assert not [p for p in db.parent.iterdir() if "lifeboat" in p.name]  # no temporary file left
    digest = sha256(db)
    assert bump_restored_db(db, 1_000_000_000).new_revision == revision + 1_000_000_000
    assert sha256(db) == digest  # a repeated call (a resumed restore) bumps nothing twice


def test_a_snapshot_file_is_never_bumped_in_place(etcd_shaped: Path, tmp_path: Path) -> None:
    snapshot = bump_revision(etcd_shaped, tmp_path / "with-trailer.db", 1).written.path
    digest = sha256(snapshot)
    with pytest.raises(UsageError, match="snapshot file"):
        bump_restored_db(snapshot, 10)
    assert sha256(snapshot) == digest


def test_a_db_whose_bump_etcd_already_compacted_is_bumped_again(
    etcd_shaped: Path, tmp_path: Path
) -> None:
    """A backup taken from a bumped cluster before any new write ends with the bump row, its
    compaction finished; restoring it must bump again, not take it for an interrupted bump."""
    first = bump_revision(etcd_shaped, tmp_path / "bumped.db", 100)
    row = encode_revision(first.new_revision)
    compacted = tmp_path / "compacted.db"
    write_db(first.written.path, compacted, [BucketChanges(META, puts={b"finishedCompactRev": row})],
             trailer=False)

    again = bump_restored_db(compacted, 1_000)

    assert (again.old_revision, again.new_revision) == (first.new_revision, first.new_revision + 1_000)
    assert snapshot_status(compacted).revision == first.new_revision + 1_000


# -- committing into a snapshot to make a member's db (lifeboat's own restore) ---------------------


def _member_changes(snapshot: Path) -> list[BucketChanges]:
    appended = [(rev(newest_revision(snapshot) + 1_000), b"")]
    return [BucketChanges(KEY, appends=appended), BucketChanges(META, puts={b"consistent_index": b"\0" * 7 + b"\3"})]


def _recording(snapshot: Path) -> tuple[list[Overwritten], Any]:
    kept: list[Overwritten] = []

    def record(before: Overwritten) -> None:
        kept.append(before)
        commit_record(snapshot).write_bytes(before.to_json())

    return kept, record


def test_a_member_db_committed_into_its_snapshot_equals_the_written_copy(
    bolt_oracle: BoltOracle, etcd_shaped: Path, tmp_path: Path
) -> None:
    snapshot = bump_revision(etcd_shaped, tmp_path / "snapshot.db", 1).written.path  # with a trailer
    revision, trailer = newest_revision(snapshot), check_trailer(snapshot).db_sha256
    copy = write_db(snapshot, tmp_path / "copy.db", _member_changes(snapshot), trailer=False)
    kept, record = _recording(snapshot)

    written = commit_member_db(snapshot, _member_changes(snapshot), record=record)

    assert sha256(snapshot) == sha256(copy.path) and not written.has_trailer
    assert written.file_size == snapshot.stat().st_size == copy.file_size
    assert_sound(bolt_oracle, snapshot)
    # The snapshot is still in the file: its tree, and its bytes provably the checked ones.
    assert Overwritten.from_json(commit_record(snapshot).read_bytes()) == kept[0]
    assert snapshot_sha256(snapshot, kept[0]) == trailer == kept[0].trailer.hex()
    assert newest_revision(snapshot, txid=kept[0].txid) == revision
    assert keeps_committed_rows(snapshot, kept[0].txid, revision) is True
    _compare_committed(snapshot, kept[0].txid, revision, 1_000)


def test_a_commit_into_a_snapshot_is_undone_to_the_snapshot_byte_for_byte_and_then_redone_once(
    etcd_shaped: Path, tmp_path: Path
) -> None:
    snapshot = bump_revision(etcd_shaped, tmp_path / "snapshot.db", 1).written.path
    original, revision = snapshot.read_bytes(), newest_revision(snapshot)
    commit_member_db(snapshot, _member_changes(snapshot), record=_recording(snapshot)[1])

    assert undo_commit(snapshot) is True
    assert snapshot.read_bytes() == original and not commit_record(snapshot).exists()
    assert undo_commit(snapshot) is False  # nothing to undo
    commit_member_db(snapshot, _member_changes(snapshot), record=_recording(snapshot)[1])
    assert newest_revision(snapshot) == revision + 1_000  # bumped once


@pytest.mark.parametrize("killed_at", ["record", "pages", "meta"])
def test_a_commit_into_a_snapshot_interrupted_anywhere_is_undone_to_the_snapshot(
    etcd_shaped: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, killed_at: str
) -> None:
    snapshot = bump_revision(etcd_shaped, tmp_path / "snapshot.db", 1).written.path
    original = snapshot.read_bytes()
    kept, record = _recording(snapshot)
    fsyncs = []

    def kill_after_record(before: Overwritten) -> None:
        record(before)
        raise KeyboardInterrupt

    def fsync(fd: int) -> None:  # the first fsyncs the pages, the second the meta
        fsyncs.append(fd)
        if len(fsyncs) == {"pages": 1, "meta": 2}[killed_at]:
            raise KeyboardInterrupt

    if killed_at != "record":
        monkeypatch.setattr(writer_module.os, "fsync", fsync)
    with pytest.raises(KeyboardInterrupt):
        commit_member_db(snapshot, _member_changes(snapshot), record=kill_after_record if killed_at == "record" else record)
    monkeypatch.undo()

    assert not check_trailer(snapshot).present or killed_at == "record"
    assert undo_commit(snapshot) is True
    assert snapshot.read_bytes() == original


def test_a_page_of_the_snapshot_written_over_by_the_commit_is_caught_before_its_meta(
    etcd_shaped: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = bump_revision(etcd_shaped, tmp_path / "snapshot.db", 1).written.path
    with BoltFile.open(snapshot) as db:
        txid, page_size = db.meta.txid, db.page_size
    new_pages = writer_module._new_pages

    def stray(db: BoltFile, out: Any, *args: Any) -> Any:  # a writer bug: one byte of page 3 changed
        found = new_pages(db, out, *args)
        out.seek(3 * page_size + 100)
        out.write(b"\xff")
        return found

    monkeypatch.setattr(writer_module, "_new_pages", stray)
    with pytest.raises(IntegrityError, match="pages changed"):
        commit_member_db(snapshot, _member_changes(snapshot), record=_recording(snapshot)[1])
    with BoltFile.open(snapshot) as db:
        assert db.meta.txid == txid  # never committed


@pytest.mark.parametrize("change", ["dropped", "altered"])
def test_a_member_db_that_lost_or_changed_a_row_of_its_snapshot_is_caught(
    etcd_shaped: Path, tmp_path: Path, change: str
) -> None:
    snapshot = bump_revision(etcd_shaped, tmp_path / "snapshot.db", 1).written.path
    revision = newest_revision(snapshot)
    kept, record = _recording(snapshot)
    changes = _member_changes(snapshot)
    wrong = (BucketChanges(KEY, deletes=frozenset({rev(1234)})) if change == "dropped" else
             BucketChanges(KEY, puts={rev(1234): b"\x0a\x03k34changed"}))
    commit_member_db(snapshot, [wrong, changes[1]], record=record)

    assert keeps_committed_rows(snapshot, kept[0].txid, revision) is False
    assert keyspace_digest(snapshot, revision) != keyspace_digest(snapshot, revision, txid=kept[0].txid)
    with pytest.raises(IntegrityError, match="differs from the snapshot"):
        _compare_committed(snapshot, kept[0].txid, revision, 0)


def test_a_snapshot_without_its_trailer_is_not_committed_into(etcd_shaped: Path) -> None:
    with pytest.raises(UsageError, match="no sha256 trailer"):
        commit_member_db(etcd_shaped, _member_changes(etcd_shaped), record=lambda before: None)


def test_a_commit_into_a_snapshot_streamed_by_etcd_keeps_its_meta_page_whatever_the_txid_parity(
    etcd_shaped: Path, tmp_path: Path
) -> None:
    """etcd's snapshot stream (bbolt Tx.WriteTo) puts the txid on page 0 and txid - 1 on page 1,
    so for an odd txid the page bbolt's commits would alternate to is the one in use."""
    snapshot = bump_revision(etcd_shaped, tmp_path / "snapshot.db", 1).written.path
    with BoltFile.open(snapshot) as db:
        if db.meta.txid % 2 == 0:
            snapshot = bump_revision(snapshot, tmp_path / "odd.db", 1).written.path
    with BoltFile.open(snapshot) as db:
        txid, size, page = db.meta.txid, db.db_size, db.page_size
        assert txid % 2 == 1 and db.meta.page_id == 1
    data = bytearray(snapshot.read_bytes()[:size])
    data[:page], data[page : 2 * page] = data[page : 2 * page], data[:page]  # as WriteTo lays them out
    snapshot.write_bytes(bytes(data) + hashlib.sha256(data).digest())
    original, revision = snapshot.read_bytes(), newest_revision(snapshot)
    kept, record = _recording(snapshot)

    commit_member_db(snapshot, _member_changes(snapshot), record=record)

    assert kept[0].meta_offset == page  # page 1, not the snapshot's page 0
    assert keeps_committed_rows(snapshot, txid, revision) is True
    assert undo_commit(snapshot) and snapshot.read_bytes() == original

"""``lifeboat snapshot check``: sound files pass, each kind of damage is named, exit 1."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from lifeboat.snapshot.bbolt import ELEMENT_SIZE, LEAF_ELEMENT, PAGE_HEADER_SIZE, BoltFile
from lifeboat.snapshot.check import check_snapshot
from lifeboat.snapshot.mvcc import encode_revision
from lifeboat.snapshot.writer import bump_revision
from tests.integration.test_snapshot_reader import corpus_for
from tests.support.binaries import EtcdRelease
from tests.support.bolt_oracle import BoltOracle
from tests.support.cli import Cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def made_source(bolt_oracle: BoltOracle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Go-made: bucket ``key`` of three levels, a nested bucket, a stored freelist; made once."""
    rows = [["put", [b"key"], encode_revision(i), b"v" * (i % 90)] for i in range(1, 30_000)]
    nested = [["put", [b"n", b"inner"], b"k%03d" % i, b"x" * 300] for i in range(40)]
    deletion = [["del", [b"key"], encode_revision(5)], ["put", [b"meta"], b"term", b"\0" * 8]]
    return bolt_oracle.create(tmp_path_factory.mktemp("check-source") / "source.db", [rows, nested, deletion])


@pytest.fixture
def source(made_source: Path, tmp_path: Path) -> Path:
    """This test's own copy of :func:`made_source`, to damage as it likes."""
    return Path(shutil.copy(made_source, tmp_path / "source.db"))


def first_leaf(path: Path, bucket: bytes) -> tuple[int, int]:
    """(byte offset, element count) of the first leaf page of ``bucket``."""
    with BoltFile.open(path) as db:
        ref = db.bucket(bucket)
        assert ref is not None
        _buf, offset, _end, count = next(db.leaves(ref, db.new_seen()))
        return offset, count


def patch(path: Path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    path.write_bytes(bytes(raw))


def test_sound_files_pass(
    source: Path, bolt_oracle: BoltOracle, release: EtcdRelease,
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
) -> None:
    bumped = bump_revision(source, tmp_path / "bumped.db", 10).written.path
    corpus = corpus_for(release, tmp_path_factory)
    for path in (source, bumped, corpus.busy.path, corpus.empty.path):
        result = check_snapshot(path)
        assert result.problems == (), path
        assert result.pages_in_use + result.pages_free == result.high_water
    assert check_snapshot(source).freelist == "stored"
    assert check_snapshot(bumped).freelist == "rebuilt on open"
    assert check_snapshot(bumped).trailer == "matches"
    assert check_snapshot(source).nested_buckets == 1


def test_keys_out_of_order_are_found_though_bbolt_tx_check_passes(
    source: Path, bolt_oracle: BoltOracle
) -> None:
    offset, count = first_leaf(source, b"key")
    assert count >= 2
    raw = source.read_bytes()
    keys = []
    for i in range(2):
        element = offset + PAGE_HEADER_SIZE + i * ELEMENT_SIZE
        _flags, pos, ksize, _vsize = LEAF_ELEMENT.unpack_from(raw, element)
        keys.append((element + pos, raw[element + pos : element + pos + ksize]))
    patch(source, keys[0][0], keys[1][1])
    patch(source, keys[1][0], keys[0][1])

    assert bolt_oracle.check(source) == []  # Go's Tx.Check only counts pages
    problems = check_snapshot(source).problems
    assert any("is not after" in p for p in problems), problems


def test_a_key_below_its_branch_key_is_found_though_bbolt_tx_check_passes(
    source: Path, bolt_oracle: BoltOracle
) -> None:
    with BoltFile.open(source) as db:
        ref = db.bucket(b"key")
        assert ref is not None
        offset, _end, _flags, count = db.tree_page(ref.root, db.new_seen())
        entries = db.branch_entries(ref.root, offset, count)
    element = offset + PAGE_HEADER_SIZE + ELEMENT_SIZE
    pos = struct.unpack_from("<I", source.read_bytes(), element)[0]
    main = struct.unpack(">Q", entries[1][0][:8])[0]
    patch(source, element + pos, encode_revision(main + 1))

    assert bolt_oracle.check(source) == []
    problems = check_snapshot(source).problems
    assert any("outside the range" in p for p in problems), problems


def test_a_page_referenced_twice_is_found(source: Path, bolt_oracle: BoltOracle) -> None:
    with BoltFile.open(source) as db:
        ref = db.bucket(b"key")
        assert ref is not None
        offset, _end, _flags, count = db.tree_page(ref.root, db.new_seen())
        children = db.branch_children(ref.root, offset, count)
    second = offset + PAGE_HEADER_SIZE + ELEMENT_SIZE + 8
    patch(source, second, struct.pack("<Q", children[0]))

    assert bolt_oracle.check(source) != []
    problems = check_snapshot(source).problems
    assert any("more than once" in p for p in problems), problems


def test_a_lost_page_is_found_when_the_freelist_is_stored(source: Path) -> None:
    with BoltFile.open(source) as db:
        freelist = db.meta.freelist
    raw = source.read_bytes()
    count = struct.unpack_from("<H", raw, freelist * 4096 + 10)[0]
    assert count > 0
    patch(source, freelist * 4096 + 10, struct.pack("<H", count - 1))

    problems = check_snapshot(source).problems
    assert any("neither in use nor free" in p for p in problems), problems


def test_a_wrong_trailer_and_a_truncated_file_are_named(source: Path, tmp_path: Path) -> None:
    bumped = bump_revision(source, tmp_path / "bumped.db", 10).written.path
    patch(bumped, bumped.stat().st_size - 1, b"\x00")
    assert check_snapshot(bumped).trailer == "mismatch"
    assert "trailer does not match" in check_snapshot(bumped).problems[0]

    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(source.read_bytes()[:50_000])
    assert "truncated" in check_snapshot(truncated).problems[0]


def test_cli_exits_1_naming_the_problem_and_reports_json(
    source: Path, tmp_path: Path, cli: Cli
) -> None:
    code, out, _err = cli("snapshot", "check", str(source))
    assert code == 0 and "sound" in out

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"hello" * 1000)
    code, out, _err = cli("snapshot", "check", str(junk))
    assert code == 1 and "not a bbolt database" in out

    code, out, _err = cli("snapshot", "check", "-o", "json", str(junk))
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False and "not a bbolt database" in doc["problems"][0]


def test_leaves_below_reread_from_are_accounted_for_but_not_reread(source: Path) -> None:
    """What the in-place bump's check relies on: pages it did not write still count once each,
    nested buckets in them are still walked, and only their keys are trusted."""
    with BoltFile.open(source) as db:
        high_water = db.meta.high_water
    offset, _count = first_leaf(source, b"key")
    raw = source.read_bytes()
    element = offset + PAGE_HEADER_SIZE
    _flags, pos, ksize, _vsize = LEAF_ELEMENT.unpack_from(raw, element)
    patch(source, element + pos, b"\xff" * ksize)  # a key out of place, below the mark
    full, known = check_snapshot(source), check_snapshot(source, reread_from=high_water)
    assert full.problems and known.problems == ()
    assert (known.keys, known.pages_in_use, known.nested_buckets) == (full.keys, full.pages_in_use, 1)

    with BoltFile.open(source) as db:
        ref = db.bucket(b"key")
        assert ref is not None
        root, _end, _flags, count = db.tree_page(ref.root, db.new_seen())
        children = db.branch_children(ref.root, root, count)
    patch(source, root + PAGE_HEADER_SIZE + ELEMENT_SIZE + 8, struct.pack("<Q", children[0]))
    problems = check_snapshot(source, reread_from=high_water).problems
    assert any("more than once" in p for p in problems), problems

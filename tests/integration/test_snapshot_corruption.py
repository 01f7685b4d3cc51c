"""Damaged snapshots give a clear lifeboat error or the right answer, never a wrong one."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from lifeboat.errors import IntegrityError, SnapshotFormatError
from lifeboat.snapshot import check_trailer, iter_latest, snapshot_status
from lifeboat.snapshot.bbolt import BoltFile, BucketRef
from tests.integration.snapshot_corpus import Corpus, etcdutl_status
from tests.integration.test_snapshot_reader import corpus_for
from tests.support.binaries import EtcdRelease

pytestmark = pytest.mark.integration

REJECTIONS = (SnapshotFormatError, IntegrityError)


@pytest.fixture(scope="module")
def busy35(release35: EtcdRelease, tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return corpus_for(release35, tmp_path_factory)


def structural_offsets(path: Path) -> list[int]:
    """Bytes that steer the reader: both meta pages, page headers and element arrays."""
    offsets: set[int] = set()
    with BoltFile.open(path) as db:
        ps = db.page_size
        offsets.update(range(0, 80))
        offsets.update(range(ps, ps + 80))
        seen = db.new_seen()
        for _buf, offset, _end, _count in db.leaves(BucketRef(db.meta.root), db.new_seen()):
            offsets.update(range(offset, offset + 1024))
        for _name, bucket in db.top_level(seen):
            for _buf, offset, _end, count in db.leaves(bucket, seen):
                if bucket.inline is None:
                    offsets.update(range(offset, offset + 16 + 16 * min(count, 2)))
        for pgid in range(2, db.meta.high_water):
            if seen[pgid] and random.Random(pgid).random() < 0.05:
                offsets.update(range(pgid * ps, pgid * ps + 16))
    return sorted(offsets)


def test_truncated_file_is_rejected_at_every_cut(busy35: Corpus, tmp_path: Path) -> None:
    data = busy35.busy.path.read_bytes()
    original = snapshot_status(busy35.busy.path)
    db_size = original.total_size
    rng = random.Random(7)
    cuts = {0, 1, 15, 16, 100, 4095, 4096, 4097, 8191, 8192, 8300, db_size - 1}
    cuts.update(rng.randrange(0, db_size) for _ in range(120))
    cut_file = tmp_path / "cut.db"
    for cut in sorted(cuts):
        cut_file.write_bytes(data[:cut])
        with pytest.raises(REJECTIONS) as caught:
            snapshot_status(cut_file)
        assert str(cut_file) in str(caught.value) and "\n" not in str(caught.value)
        with pytest.raises(REJECTIONS):
            list(iter_latest(cut_file))
    # Cutting only into the trailer leaves the database whole: the right answer, or a
    # trailer complaint when asked to verify it.
    for cut in (db_size, db_size + 1, db_size + 31):
        cut_file.write_bytes(data[:cut])
        assert snapshot_status(cut_file) .to_etcdutl_json() == original.to_etcdutl_json()
        with pytest.raises(IntegrityError):
            snapshot_status(cut_file, verify_trailer=True)


@pytest.mark.parametrize("shape", ["empty", "busy"])
def test_flipped_structural_bytes_give_an_error_or_what_etcdutl_says(
    busy35: Corpus, shape: str, tmp_path: Path
) -> None:
    """Without a trailer nothing can see damage inside a value; etcdutl is the oracle then."""
    source = getattr(busy35, shape).path
    data = source.read_bytes()[:-32]
    offsets = structural_offsets(source)
    rng = random.Random(11)
    chosen = rng.sample(offsets, min(len(offsets), 130))
    chosen += [rng.randrange(0, len(data)) for _ in range(20)]
    damaged = tmp_path / "damaged.db"
    answered = rejected = oracle_crashed = 0
    for offset in chosen:
        flipped = bytearray(data)
        flipped[offset] ^= 1 << rng.randrange(8)
        damaged.write_bytes(flipped)
        try:
            ours = snapshot_status(damaged).to_etcdutl_json()
        except REJECTIONS as exc:
            assert str(damaged) in str(exc) and "\n" not in str(exc)
            rejected += 1
            continue
        theirs = etcdutl_status(damaged)
        if isinstance(theirs, str) and "fatal error: fault" in theirs:
            # etcdutl's bbolt itself faulted (SIGSEGV in its page walk, seen once in a CI run): the
            # oracle gives no answer to compare with. Rare, or the corpus is not what this test needs.
            oracle_crashed += 1
            continue
        answered += 1
        assert ours == theirs, f"byte {offset} flipped"
    assert rejected > 10 and answered > 10 and oracle_crashed <= 2


def test_any_flipped_byte_is_caught_by_the_trailer(busy35: Corpus, tmp_path: Path) -> None:
    data = busy35.busy.path.read_bytes()
    rng = random.Random(5)
    damaged = tmp_path / "damaged.db"
    for offset in [0, 4096 + 40, len(data) - 33, len(data) - 1] + rng.sample(range(len(data)), 20):
        flipped = bytearray(data)
        flipped[offset] ^= 0x40
        damaged.write_bytes(flipped)
        assert not check_trailer(damaged).matches
        with pytest.raises(REJECTIONS):
            snapshot_status(damaged, verify_trailer=True)


def test_a_file_that_is_not_bbolt_is_rejected(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_bytes(b"etcd snapshot? no.\n" * 2000)
    with pytest.raises(SnapshotFormatError, match="not a bbolt database"):
        snapshot_status(junk)

"""The offline snapshot reader against snapshots saved from real etcd 3.5.1 and 3.4.23."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lifeboat.snapshot import (
    check_trailer,
    iter_latest,
    read_members,
    read_meta,
    snapshot_status,
)
from lifeboat.snapshot.bbolt import LEAF_PAGE, BoltFile
from tests.integration.snapshot_corpus import (
    Corpus,
    Shot,
    etcdctl34_status,
    etcdutl_status,
    make_corpus,
)
from tests.support.binaries import EtcdRelease, etcd_35

pytestmark = pytest.mark.integration

_corpora: dict[str, Corpus] = {}


def corpus_for(release: EtcdRelease, factory: pytest.TempPathFactory) -> Corpus:
    """One corpus per release per session, shared by every test module that needs it."""
    if release.version not in _corpora:
        _corpora[release.version] = make_corpus(release, factory.mktemp(f"corpus-{release.version}"))
    return _corpora[release.version]


@pytest.fixture(scope="session")
def corpus(release: EtcdRelease, tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return corpus_for(release, tmp_path_factory)


@pytest.fixture(params=["empty", "busy"])
def shot(request: pytest.FixtureRequest, corpus: Corpus) -> Shot:
    result: Shot = getattr(corpus, request.param)
    return result


def test_status_equals_etcdutl_and_etcdctl34(shot: Shot) -> None:
    ours = snapshot_status(shot.path).to_etcdutl_json()
    assert ours == etcdutl_status(shot.path)
    assert ours == etcdctl34_status(shot.path)


def test_status_json_text_is_what_etcdutl_prints(corpus: Corpus) -> None:
    etcdutl = etcd_35().etcdutl
    assert etcdutl is not None
    printed = subprocess.run(
        [str(etcdutl), "snapshot", "status", "-w", "json", str(corpus.busy.path)],
        capture_output=True, check=True,
    ).stdout.decode().strip()
    assert snapshot_status(corpus.busy.path).etcdutl_json_text() == printed


def test_latest_state_equals_what_etcd_returned_before_the_snapshot(shot: Shot) -> None:
    ours = [
        (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
        for kv in iter_latest(shot.path)
    ]
    theirs = [
        (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
        for kv in shot.keys
    ]
    assert ours == theirs


def test_prefix_limits_the_latest_state(corpus: Corpus) -> None:
    prefix = b"/registry/configmaps/"
    ours = [kv.key for kv in iter_latest(corpus.busy.path, prefix=prefix)]
    assert ours == [kv.key for kv in corpus.busy.keys if kv.key.startswith(prefix)]
    assert len(ours) > 100


def test_busy_snapshot_has_the_shapes_the_reader_must_handle(corpus: Corpus) -> None:
    """Guards the fixture: overflow pages, three tree levels, inline buckets, tombstones."""
    with BoltFile.open(corpus.busy.path) as db:
        seen = db.new_seen()
        buckets = dict(db.top_level(seen))
        assert any(ref.inline is not None for ref in buckets.values())
        depth, page = 1, buckets[b"key"].root
        while True:
            offset, _end, flags, count = db.tree_page(page, db.new_seen())
            if flags == LEAF_PAGE:
                break
            page = db.branch_children(page, offset, count)[0]
            depth += 1
        assert depth >= 3
        assert any(len(key) == 18 for key, *_ in db.items(buckets[b"key"], db.new_seen()))
        assert any(
            end - offset > db.page_size
            for _buf, offset, end, _count in db.leaves(buckets[b"key"], db.new_seen())
        )
    values = {kv.key: kv.value for kv in corpus.busy.keys}
    assert len(values[b"/registry/secrets/big/one-point-two-mib"]) > 1 << 20
    assert any(kv.lease for kv in corpus.busy.keys)


def test_trailer_of_a_saved_snapshot_matches(shot: Shot) -> None:
    check = check_trailer(shot.path)
    assert check.present and check.matches
    assert check.db_size == snapshot_status(shot.path).total_size
    assert snapshot_status(shot.path, verify_trailer=True).has_trailer


def test_meta_records_compaction_marks(shot: Shot) -> None:
    meta = read_meta(shot.path)
    assert meta.finished_compact_revision == shot.compacted_at
    assert meta.scheduled_compact_revision == shot.compacted_at


def test_meta_records_the_consistent_index_after_writes(corpus: Corpus) -> None:
    # etcd 3.4 writes consistent_index only with the first applied write, so an empty
    # cluster's snapshot may lack it.
    index = read_meta(corpus.busy.path).consistent_index
    assert index is not None and index > len(corpus.busy.keys) // 128


def test_members_bucket_names_the_member_and_its_peer_url(shot: Shot) -> None:
    members, removed = read_members(shot.path)
    assert [(m.name, m.peer_urls) for m in members] == [(shot.member_name, (shot.peer_url,))]
    assert removed == []


def test_raw_db_without_trailer_gives_the_same_status(corpus: Corpus, tmp_path: Path) -> None:
    raw = tmp_path / "raw.db"
    data = corpus.busy.path.read_bytes()
    raw.write_bytes(data[:-32])
    status = snapshot_status(raw)
    assert not status.has_trailer and not check_trailer(raw).present
    assert status.to_etcdutl_json() == snapshot_status(corpus.busy.path).to_etcdutl_json()

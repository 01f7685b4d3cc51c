"""Segments re-encoded with changed records that still decompress, match their index, counts
and sha256: a point restore refuses them as damaged, never applies them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from lifeboat.catalog.layout import segment_key
from lifeboat.errors import IntegrityError, UsageError
from lifeboat.etcd import EtcdClient
from lifeboat.catalog.timeline import RestorePoint
from lifeboat.pitr import PointTarget, build_point_snapshot, find_point
from lifeboat.snapshot import iter_latest
from lifeboat.snapshot.mvcc import decode_key_value
from lifeboat.snapshot.replay import encode_fields
from tests.support.capture_workload import capture_options, capture_started, open_repository, wait_for, write_history
from tests.support.etcd import EtcdMember
from tests.integration.test_point_in_time import captured_history, restored_state, source_state
from tests.support.forged_segment import Record, forge, read_records

pytestmark = pytest.mark.integration


def _with_kv(record: Record, **changes: int) -> Record:
    kv = decode_key_value(record.value, 0, len(record.value))
    fields = {"create_revision": kv.create_revision, "mod_revision": kv.mod_revision, "version": kv.version,
              "lease": kv.lease, **changes}
    return replace(record, value=encode_fields(kv.key, fields["create_revision"], fields["mod_revision"],
                                               fields["version"], kv.value, fields["lease"]))


def _puts(records: list[Record]) -> list[int]:
    return [i for i, r in enumerate(records) if r.kind == b"p"]


def value_names_another_revision(records: list[Record]) -> list[Record]:
    i = _puts(records)[-1]
    records[i] = _with_kv(records[i], mod_revision=records[i].main - 1)
    return records


def value_names_another_lease(records: list[Record]) -> list[Record]:
    i = _puts(records)[-1]
    records[i] = _with_kv(records[i], lease=0x7777)
    return records


def head_names_another_lease(records: list[Record]) -> list[Record]:
    i = _puts(records)[-1]
    records[i] = replace(records[i], lease=0x7777)
    return records


def two_records_share_a_row_key(records: list[Record]) -> list[Record]:
    # A record moved onto the next one's revision and sub revision: two rows of one row key.
    i = next(i for i in range(len(records) - 1) if records[i + 1].main == records[i].main + 1)
    records[i] = replace(records[i], main=records[i + 1].main, sub=records[i + 1].sub,
                         value=_with_kv(records[i], mod_revision=records[i + 1].main).value)
    return records


def record_duplicated(records: list[Record]) -> list[Record]:
    i = _puts(records)[-1]
    return records[:i + 1] + [records[i]] + records[i + 1:]


def records_of_one_revision_swapped(records: list[Record]) -> list[Record]:
    i = next(i for i in range(len(records) - 1) if records[i + 1].main == records[i].main)
    records[i], records[i + 1] = records[i + 1], records[i]
    return records


def sub_revision_skipped(records: list[Record]) -> list[Record]:
    i = next(i for i in range(len(records) - 1) if records[i + 1].main == records[i].main)
    records[i + 1] = replace(records[i + 1], sub=records[i + 1].sub + 1)
    return records


# What a restore writes would differ from what etcd wrote: refused.
CHANGING_THE_ROWS: list[Callable[[list[Record]], list[Record]]] = [
    value_names_another_revision, value_names_another_lease, head_names_another_lease, two_records_share_a_row_key,
]
# The rows written stay etcd's own (a revision's records are rows of distinct keys, each with
# its own row key): applied or refused, the restore is what the sound segment restores.
LEAVING_THE_ROWS: list[Callable[[list[Record]], list[Record]]] = [
    record_duplicated, records_of_one_revision_swapped, sub_revision_skipped,
]


def captured_and_restored(etcd: EtcdMember, client: EtcdClient, tmp_path: Path) -> tuple[Path, RestorePoint, Path]:
    """A chain whose largest segment has transactions and a leased put before its last record;
    that segment's path, the point at its end, and the point's snapshot built from it as written."""
    repo_dir = tmp_path / "repo"
    repo = open_repository(repo_dir)
    lease = client.lease_grant(600)
    options = capture_options("prod", etcd.client_url, tmp_path / "spool", flush_interval=5.0)
    with capture_started(client, repo, options) as status:
        write_history(client, 3)
        client.put("/leased/last", b"x", lease=lease)
        client.put("/after", b"y")  # the leased put is not the last record: the point ends after it
        last = client.range(b"\0", b"\0", limit=1).revision
        wait_for(lambda: status.last_revision >= last)
    [listing] = repo.chain_store.chains("prod")
    ref = max(listing.segments, key=lambda r: r.last_revision - r.first_revision)
    path = repo_dir / segment_key("prod", listing.info.chain, ref.name)
    assert len(read_records(path.read_bytes())[1]) > 3
    point = find_point(repo, "prod", PointTarget(revision=ref.last_revision), None)
    return path, point, build_point_snapshot(repo, point, None, tmp_path / "sound.db").path


def built_forged(etcd: EtcdMember, client: EtcdClient, tmp_path: Path,
                 forgery: Callable[[list[Record]], list[Record]]) -> tuple[Path, Path]:
    """The point's snapshot built from the segment re-encoded by ``forgery``, and from it as written."""
    path, point, sound = captured_and_restored(etcd, client, tmp_path)
    forge(path, forgery)
    return build_point_snapshot(open_repository(tmp_path / "repo"), point, None, tmp_path / "forged.db").path, sound


@pytest.mark.parametrize("release", ["3.5"], indirect=True)
@pytest.mark.parametrize("forgery", CHANGING_THE_ROWS, ids=lambda f: f.__name__)
def test_a_segment_re_encoded_with_a_record_etcd_never_wrote_is_refused_as_damaged_never_applied(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path,
        forgery: Callable[[list[Record]], list[Record]]) -> None:
    with pytest.raises(IntegrityError) as refused:
        built_forged(etcd, client, tmp_path, forgery)
    assert "damaged" in str(refused.value) or "disagree" in str(refused.value), refused.value
    assert not (tmp_path / "forged.db").exists()


@pytest.mark.parametrize("release", ["3.5"], indirect=True)
@pytest.mark.parametrize("forgery", LEAVING_THE_ROWS, ids=lambda f: f.__name__)
def test_a_segment_re_encoded_with_its_records_moved_or_repeated_restores_etcds_rows_or_is_refused(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path,
        forgery: Callable[[list[Record]], list[Record]]) -> None:
    try:
        built, sound = built_forged(etcd, client, tmp_path, forgery)
    except IntegrityError as refused:
        assert "damaged" in str(refused), refused
        return
    assert list(iter_latest(built)) == list(iter_latest(sound))


@pytest.mark.parametrize("release", ["3.5"], indirect=True)
@pytest.mark.parametrize("shift", [2, -2], ids=["raised", "lowered"])
def test_a_chain_record_naming_another_base_revision_is_refused_not_replayed_past_events(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, shift: int) -> None:
    """chain.json rewritten (valid JSON) with its base revision moved: the events between the
    base's true revision and the one named would be skipped (raised) or refused (lowered)."""
    repo, history = captured_history(etcd, client, tmp_path, 2)
    repo_dir = tmp_path / "repo"
    [listing] = repo.chain_store.chains("prod")
    record = next(repo_dir.rglob("chain.json"))
    fields = json.loads(record.read_text())
    fields["base_revision"] += shift
    record.write_text(json.dumps(fields))
    revision = history.revisions[1]  # the events the raised one would skip: put a, put b
    try:
        point = find_point(repo, "prod", PointTarget(revision=revision), None)
        built = build_point_snapshot(repo, point, None, tmp_path / "point.db").path
    except (IntegrityError, UsageError):
        assert not (tmp_path / "point.db").exists()
        return  # refused: never a wrong state
    assert restored_state(built) == source_state(client, revision), f"base revision {listing.info.base_revision} + {shift}"

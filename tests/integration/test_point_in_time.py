"""Point-in-time recovery against real etcd: the oracle is etcd's own Range at each revision."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import zstandard

from lifeboat.backup import synthetic
from lifeboat.capture import CaptureOptions, CaptureStatus
from lifeboat.capture.packing import Packer
from lifeboat.catalog.codec import checksummed_frame_end, frames_decompressed
from lifeboat.catalog.layout import segment_key
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.segments import decode_segment
from lifeboat.cli import restore as restore_cli
from lifeboat.disk import MARGIN, RoomNeeded
from lifeboat.durable import part_path
from lifeboat.errors import IntegrityError, NoRoom, OperationFailed, UsageError
from lifeboat.etcd import ConnectionSettings, EtcdClient
from lifeboat.etcd.data_dir import WAL_SEGMENT_BYTES
from lifeboat.pitr import ChainSurvey, PointTarget, build_point_snapshot, find_point, history
from lifeboat.pitr.history import object_history
from lifeboat.catalog.timeline import cluster_timeline
from lifeboat.restore import steps
from lifeboat.restore.journal import journal_path
from lifeboat.restore.native import native_or
from lifeboat.restore.steps import ReplayCapture, RestoreData
from lifeboat.snapshot import iter_latest, snapshot_status
from lifeboat.snapshot.bbolt import BoltFile, BucketRef
from lifeboat.snapshot import writer
from lifeboat.snapshot import writer as writer_module
from lifeboat.snapshot.mvcc import decode_key_value, decode_revision, read_meta
from lifeboat.snapshot.replay import tombstone_value
from lifeboat.verify.drill import DrillReplay, run_drill
from tests.support.binaries import EtcdRelease
from tests.support.capture_workload import (
    History, capture_options, capture_started, open_repository, wait_for, write_history,
)
from tests.support.cli import Cli
from tests.support.etcd import EtcdMember
from tests.support.pki import Pki
from tests.support.segment_v1 import encode_segment_v1, v1_name
from tests.support.segment_v2 import encode_segment_v2
from tests.integration.test_restore_cli import Node, kubeadm_node  # noqa: F401 (fixture)
from tests.integration.test_restore_cli import client as tls_client
from tests.integration.test_snapshot_writer import restore_with_stock_tool

pytestmark = pytest.mark.integration


def source_state(client: EtcdClient, revision: int) -> list[tuple[bytes, bytes, int, int, int, int]]:
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
            for kv in client.range_all(b"", prefix=True, revision=revision)]


def restored_state(path: Path) -> list[tuple[bytes, bytes, int, int, int, int]]:
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
            for kv in iter_latest(path)]


def test_restore_to_each_revision_equals_etcds_own_range_at_that_revision(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path) -> None:
    repo = open_repository(tmp_path / "repo")
    client.put("/registry/before/base", b"in the base")
    written_before_base = datetime.now(UTC)
    with capture_started(client, repo, capture_options("prod", etcd.client_url, tmp_path / "spool",
                                                 flush_interval=0.2)) as status:
        early = write_history(client, 4, tag="early")
        wait_for(lambda: status.last_revision >= early.revisions[-1])  # late starts a new segment
        late = write_history(client, 4, tag="late")
        wait_for(lambda: status.last_revision >= late.revisions[-1])
    base = status.last_revision - len(early.revisions) - len(late.revisions)
    chosen = sorted({early.revisions[0], early.revisions[3], early.revisions[-1], late.revisions[2],
                     late.revisions[4], late.revisions[-1]})
    for revision in chosen:
        point = find_point(repo, "prod", PointTarget(revision=revision), None)
        built = build_point_snapshot(repo, point, None, tmp_path / f"at-{revision}.db")
        assert snapshot_status(built.path).revision == revision
        assert restored_state(built.path) == source_state(client, revision), f"state differs at {revision}"
    assert base > 0
    # The window starts when its base was taken, to the millisecond: not at the second before,
    # when the base's revision (holding the put above) may not have existed yet.
    [window] = cluster_timeline(repo, "prod").windows
    assert window.first_time >= written_before_base


def test_every_revision_of_binary_keys_large_values_and_ending_leases_restores_as_etcds_range(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path) -> None:
    """Keys that are not UTF-8 (one a single NUL byte), values of 1.4-1.5 MB (each a revision
    larger than segment-max-bytes), a lease revoked and one expiring under capture (the deletes
    etcd writes for them), a transaction deleting a binary key: each revision exact."""
    from lifeboat.etcd.txn import Delete, Put
    repo = open_repository(tmp_path / "repo")
    options = capture_options("prod", etcd.client_url, tmp_path / "spool", flush_interval=0.2,
                              segment_max_bytes=1 << 20)
    with capture_started(client, repo, options) as status:
        first = client.put(b"/bin/\xff\x00\x80", b"\xc3\x28")
        client.put(b"/big/one", os.urandom(1_500_000))
        client.put(b"/big/one", os.urandom(1_400_000))
        short, kept = client.lease_grant(2), client.lease_grant(600)
        client.put(b"/lease/short", b"s", lease=short)
        client.put(b"/lease/kept", b"k", lease=kept)
        client.txn([], [Put(b"/t/\xfe", b"1"), Put(b"/t/2", b"2", lease=kept), Delete(b"/bin/\xff\x00\x80")])
        client.lease_revoke(kept)
        wait_for(lambda: not list(client.range_all(b"/lease/short")), timeout=15)  # expired, its key deleted
        client.put(b"\x00", b"a NUL key")
        client.delete_range(b"\x00", b"\xff")  # every key so far
        last = client.put(b"/after", b"x")
        wait_for(lambda: status.last_revision >= last, timeout=60)
    for revision in range(first - 1, last + 1):
        point = find_point(repo, "prod", PointTarget(revision=revision), None)
        built = build_point_snapshot(repo, point, None, tmp_path / f"at-{revision}.db")
        assert restored_state(built.path) == source_state(client, revision), f"state differs at {revision}"


def key_rows(path: Path, after: int) -> list[tuple[bytes, bytes]]:
    """The raw rows of bucket ``key`` for revisions after ``after``, in the db's order."""
    with BoltFile.open(path) as db:
        bucket = db.bucket(b"key")
        assert bucket is not None
        return [(bytes(key), bytes(value)) for key, value, *_ in db.items(bucket, db.new_seen())
                if value is not None and decode_revision(key)[0] > after]


def captured_history(etcd: EtcdMember, client: EtcdClient, tmp_path: Path,
                     rounds: int) -> tuple[BackupRepository, History]:
    """A repository holding a base and the capture of ``rounds`` of :func:`write_history`."""
    repo = open_repository(tmp_path / "repo")
    with capture_started(client, repo, capture_options("prod", etcd.client_url, tmp_path / "spool",
                                                       flush_interval=0.2)) as status:
        history = write_history(client, rounds)
        wait_for(lambda: status.last_revision >= history.revisions[-1])
    return repo, history


def newest_per_key(rows: list[tuple[bytes, bytes]], point: int) -> list[tuple[bytes, bytes]]:
    """Of ``rows`` (in revision order, after the base, up to ``point``), each etcd key's last:
    what survives a compaction after them; but none for a key created after the base (its first
    row a put of version 1) and deleted before the point, whose tombstone hides no live row."""
    newest: dict[bytes, tuple[bytes, bytes]] = {}
    created: set[bytes] = set()
    for key, value in rows:
        kv = decode_key_value(value, 0, len(value))
        if kv.key not in newest and kv.version == 1:
            created.add(kv.key)
        newest[kv.key] = (key, value)
    return sorted(row for user_key, row in newest.items()
                  if not (user_key in created and decode_revision(row[0])[2] and decode_revision(row[0])[0] < point))


def test_replayed_rows_are_byte_for_byte_the_newest_rows_etcd_wrote_for_each_key(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path) -> None:
    repo, history = captured_history(etcd, client, tmp_path, 6)
    point = find_point(repo, "prod", PointTarget(revision=history.revisions[-1]), None)
    built = build_point_snapshot(repo, point, None, tmp_path / "replayed.db")
    source = tmp_path / "source.db"
    source.write_bytes(b"".join(client.snapshot(etcd.client_url)))
    replayed = key_rows(built.path, point.base_revision)
    written = key_rows(source, point.base_revision)
    assert len(replayed) > 6 and len(written) > 6 * 7
    assert replayed == newest_per_key(written, point.revision) and len(replayed) < len(written)
    tombstones = {value for key, value in replayed if decode_revision(key)[2]}
    assert tombstone_value(b"/registry/r/0000/b") not in tombstones, "created and deleted in one round: no row"
    # The last revision deletes only keys created since the base: their tombstones stay, so that
    # the store's newest row, its revision for etcd and for a bump, is the point.
    assert {decode_revision(key)[0] for key, _ in replayed} >= {point.revision}
    assert snapshot_status(built.path).revision == point.revision
    marks = read_meta(built.path)
    assert marks.finished_compact_revision == marks.scheduled_compact_revision == point.revision


def test_the_replay_reports_how_long_it_waited_for_the_survey_of_its_segments(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, history = captured_history(etcd, client, tmp_path, 3)
    point = find_point(repo, "prod", PointTarget(revision=history.revisions[-1]), None)
    surveyed = ChainSurvey.result

    def late_result(self: ChainSurvey) -> object:  # a survey that ends 0.5 s after the base was fetched
        time.sleep(0.5)
        return surveyed(self)

    monkeypatch.setattr(ChainSurvey, "result", late_result)
    built = build_point_snapshot(repo, point, None, tmp_path / "replayed.db")
    assert built.survey_wait >= 0.5 and built.seconds > built.survey_wait
    source = tmp_path / "source.db"
    source.write_bytes(b"".join(client.snapshot(etcd.client_url)))
    assert built.events == len(key_rows(source, point.base_revision)) > 3, "one row etcd wrote per event"


@contextmanager
def served_by_stock_etcd(release: EtcdRelease, snapshot: Path, workdir: Path) -> Iterator[EtcdClient]:
    """A one-member etcd restored from ``snapshot`` by etcd's own tool, as by hand, and started."""
    member = EtcdMember(release, "m1", workdir)
    restore_with_stock_tool(release, snapshot, member)
    member.start(f"m1={member.peer_url}", "at-point", "new")
    try:
        member.wait_healthy()
        with EtcdClient(ConnectionSettings((member.client_url,))) as restored:
            yield restored
    finally:
        member.stop()


def test_etcd_serving_a_bumped_point_whose_last_revision_deleted_new_keys_is_at_the_point_plus_the_bump(
        release: EtcdRelease, etcd: EtcdMember, client: EtcdClient, tmp_path: Path) -> None:
    repo, history = captured_history(etcd, client, tmp_path, 3)
    revision = history.revisions[-1]  # the delete of round 1's keys, all created after the base
    assert full_state(client, revision - 1).keys() - full_state(client, revision).keys()
    built = build_point_snapshot(repo, find_point(repo, "prod", PointTarget(revision=revision), None), None,
                                 tmp_path / "at-point.db")
    writer.bump_revision(built.path, tmp_path / "bumped.db", 1000)
    with served_by_stock_etcd(release, tmp_path / "bumped.db", tmp_path / "restored") as restored:
        assert full_state(restored) == full_state(client, revision)
        assert restored.range(b"\0", limit=1).revision == revision + 1000


@pytest.mark.parametrize("which", ["a put", "a delete of keys created after the base"])
def test_a_points_snapshot_saved_by_verify_restores_with_etcds_own_tool_to_the_source_state(
        which: str, release: EtcdRelease, etcd: EtcdMember, client: EtcdClient, tmp_path: Path, cli: Cli) -> None:
    repo, history = captured_history(etcd, client, tmp_path, 3)
    revision = history.revisions[-1] if which.startswith("a delete") else history.revisions[2]
    saved = tmp_path / "point.db"
    code, out, err = cli("verify", "--to-revision", str(revision), "--save-snapshot", str(saved),
                         "--repo", str(tmp_path / "repo"))
    assert code == 0, err
    assert f"at revision {revision} " in out and str(saved) in out and not part_path(saved).exists()
    with served_by_stock_etcd(release, saved, tmp_path / "by-hand") as restored:  # as the README's restore by hand
        assert full_state(restored) == full_state(client, revision)
        assert restored.range(b"\0", limit=1).revision == revision


def test_a_points_snapshot_is_not_saved_without_asking_and_not_over_a_file_when_a_segment_is_damaged(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, cli: Cli) -> None:
    repo, history = captured_history(etcd, client, tmp_path, 2)
    repo_dir = str(tmp_path / "repo")
    code, _out, err = cli("verify", "--to-revision", str(history.revisions[-1]), "--repo", repo_dir)
    assert code == 3 and "--drill" in err and "--save-snapshot" in err
    (listing,) = repo.chain_store.chains("prod")
    for ref in listing.segments:
        flip_byte(tmp_path / "repo" / segment_key("prod", listing.info.chain, ref.name), ref.size // 2)
    saved = tmp_path / "point.db"
    saved.write_bytes(b"an older file, left as it was")
    code, _out, err = cli("verify", "--to-revision", str(history.revisions[-1]), "--save-snapshot", str(saved),
                          "--repo", repo_dir)
    assert code == 1 and err.count("\n") == 1, err
    assert saved.read_bytes() == b"an older file, left as it was" and not part_path(saved).exists()


# ``verify --to-revision R --save-snapshot FILE`` stopped in its replay (segments surveyed and
# staged, FILE.part at the base's revision): it says so in the file $STOPPED and waits to be killed.
_STOPPED_SAVING_A_POINT = """
import os, sys, time
import lifeboat.pitr.point as point
def stop(*args, **kw):
    open(os.environ["STOPPED"], "w").close()
    time.sleep(600)
point.commit_in_place = stop
from lifeboat.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_points_snapshot_saved_by_two_runs_at_once_or_after_a_killed_run_is_whole_and_exact(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, cli: Cli) -> None:
    """Two runs wrote one FILE.part (each could rename the other's half file onto FILE); a run
    killed with -9 mid-replay left FILE.part and its staged segments for good."""
    import signal
    import sys
    _repo, history = captured_history(etcd, client, tmp_path, 3)
    revision, saved, stopped = history.revisions[4], tmp_path / "point.db", tmp_path / "stopped"
    argv = ["verify", "--to-revision", str(revision), "--save-snapshot", str(saved), "--repo", str(tmp_path / "repo")]
    first = subprocess.Popen([sys.executable, "-c", _STOPPED_SAVING_A_POINT, *argv], stderr=subprocess.PIPE,
                             env={**os.environ, "STOPPED": str(stopped)})
    try:
        wait_for(lambda: stopped.exists() or first.poll() is not None, timeout=60)
        assert stopped.exists(), first.stderr.read() if first.stderr else ""
        code, _out, err = cli(*argv)
        assert code == 1 and err.count("\n") == 1, err
        assert f"{saved} is being written by another process (pid {first.pid}" in err
        assert part_path(saved).exists() and not saved.exists()  # the first run's, left alone
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not saved.exists()
    assert part_path(saved).exists() and (tmp_path / "point.db.part.segments").is_dir()  # what -9 leaves
    code, _out, err = cli(*argv)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("point", ".point"))) == ["point.db"]
    assert restored_state(saved) == source_state(client, revision)


def test_etcd_serving_a_point_snapshot_answers_as_the_source_at_the_point_and_refuses_older_revisions(
        release: EtcdRelease, etcd: EtcdMember, client: EtcdClient, tmp_path: Path) -> None:
    """No bump here: the history between the base and the point was not written, so etcd must
    call it compacted rather than answer from it."""
    repo, history = captured_history(etcd, client, tmp_path, 4)
    revision = history.revisions[-2]
    built = build_point_snapshot(repo, find_point(repo, "prod", PointTarget(revision=revision), None), None,
                                 tmp_path / "at-point.db")
    member = EtcdMember(release, "m1", tmp_path / "restored")
    restore_with_stock_tool(release, built.path, member)
    member.start(f"m1={member.peer_url}", "at-point", "new")
    try:
        member.wait_healthy()
        with EtcdClient(ConnectionSettings((member.client_url,))) as restored:
            assert full_state(restored) == full_state(client, revision)
            assert restored.range(b"\0", limit=1).revision == revision
        refused = subprocess.run([str(release.etcdctl), f"--endpoints={member.client_url}", "get", "",
                                  "--prefix", f"--rev={history.revisions[1]}"],
                                 capture_output=True, text=True, timeout=30, env=dict(os.environ, ETCDCTL_API="3"))
        assert refused.returncode != 0 and "compacted" in refused.stderr, "an older revision was answered"
    finally:
        member.stop()


def test_a_chain_captured_partly_by_older_lifeboat_restores_exactly(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path) -> None:
    """Segments of format version 1 (JSON lines), then version 2 (records, one zstd frame), then
    version 3 (an index frame, then the records), as after two upgrades mid-chain."""
    repo_dir = tmp_path / "repo"
    repo = open_repository(repo_dir)
    with capture_started(client, repo, capture_options("prod", etcd.client_url, tmp_path / "spool",
                                                 flush_interval=0.1)) as status:
        old = write_history(client, 3, tag="old")
        wait_for(lambda: status.last_revision >= old.revisions[-1])
        middle = write_history(client, 3, tag="middle")
        wait_for(lambda: status.last_revision >= middle.revisions[-1])
        new = write_history(client, 3, tag="new")
        wait_for(lambda: status.last_revision >= new.revisions[-1])
    versions = {1: 0, 2: 0, 3: 0}
    for path in sorted(repo_dir.rglob("segments/*.seg.zst")):
        last = int(path.name.split("-")[1])
        if last > middle.revisions[-1]:
            versions[3] += 1
            continue
        segment = decode_segment(frames_decompressed(path.read_bytes()), "t")
        if last <= old.revisions[-1]:
            path.with_name(v1_name(path.name)).write_bytes(
                zstandard.ZstdCompressor().compress(encode_segment_v1(segment)))
            path.unlink()
            versions[1] += 1
        else:
            path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(encode_segment_v2(segment)))
            versions[2] += 1
    assert all(versions.values()), f"the chain must mix every version: {versions}"
    for revision in (old.revisions[2], old.revisions[-1], middle.revisions[3], middle.revisions[-1],
                     new.revisions[3], new.revisions[-1]):
        point = find_point(repo, "prod", PointTarget(revision=revision), None)
        built = build_point_snapshot(repo, point, None, tmp_path / f"at-{revision}.db")
        assert restored_state(built.path) == source_state(client, revision), f"state differs at {revision}"


@contextmanager
def node_capture(c: EtcdClient, node: Node, repo: BackupRepository, spool: Path) -> Iterator[CaptureStatus]:
    """Capture from the kubeadm node's etcd (one key in place before its base) into ``repo``, started."""
    c.put("/registry/configmaps/default/before", b"base")
    with capture_started(c, repo, capture_options("default", node.etcd.client_url, spool, flush_interval=0.2)) as status:
        yield status


def full_state(c: EtcdClient, revision: int = 0) -> dict[bytes, tuple[bytes, int, int, int, int]]:
    return {kv.key: (kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
            for kv in c.range_all(b"", prefix=True, revision=revision)}


def test_restore_to_revision_and_time_on_a_kubeadm_node_serves_the_source_state_at_that_point(
        kubeadm_node: Node, cli: Cli, pki: Pki, tmp_path: Path) -> None:
    node = kubeadm_node
    url, flags = node.etcd.client_url, node.flags
    with tls_client(url, pki) as c:
        with node_capture(c, node, open_repository(node.repo), tmp_path / "spool") as status:
            first = write_history(c, 3, tag="first")
            # Capture must have seen the first writes before the chosen moment, however loaded.
            wait_for(lambda: status.last_revision >= first.revisions[-1])
            time.sleep(1.2)
            moment = datetime.now(UTC)
            time.sleep(0.3)
            second = write_history(c, 3, tag="second")
            wait_for(lambda: status.last_revision >= second.revisions[-1])
        point = first.revisions[-1]
        expected = full_state(c, point)
        assert any(lease for *_, lease in expected.values()), "the point must hold lease-attached keys"
        last = c.range(b"\0", limit=1).revision

    code, _out, err = cli("restore", "--to-revision", str(last + 50), *flags, "--dry-run")
    assert code == 3 and "after the newest captured point" in err and f"revision {last}" in err
    code, _out, err = cli("restore", "--to-time", "2999-01-01T00:00:00Z", *flags, "--dry-run")
    assert code == 3 and "in the future" in err
    plan = cli.json("restore", "--to-time", moment.isoformat(), *flags, "--dry-run")
    assert "replay-capture" in [s["key"] for s in plan["steps"]]  # type: ignore[index]
    assert f"to revision {point} " in plan["title"]  # type: ignore[operator]

    # The segments are surveyed while the base downloads: a damaged one is still refused before
    # the node is touched, and what was staged is removed.
    segment = sorted(Path(node.repo.removeprefix("file://")).rglob("segments/*.seg.zst"))[0]
    intact = segment.read_bytes()
    segment.write_bytes(intact[: len(intact) // 2] + bytes([intact[len(intact) // 2] ^ 0xFF]) + intact[len(intact) // 2 + 1:])
    code, _out, err = cli("restore", "--to-revision", str(point), *flags)
    assert code == 1 and ("damaged" in err or "corrupt" in err), err
    assert not [p for p in node.root.rglob("*") if p.name.endswith(".segments")]
    assert not [p for p in node.root.rglob("*.lifeboat-work/snapshot.db")], \
        "the decrypted base of a refused replay is removed, as a fetch that failed its checks removes it"
    with tls_client(url, pki) as c:
        assert full_state(c, point) == expected, "a refused replay leaves the node's etcd as it was"
    segment.write_bytes(intact)

    code, out, err = cli("restore", "--to-revision", str(point), *flags, "-o", "json")
    assert code == 0, err
    assert "replay-capture" in json.loads(out)["ran"]
    said = re.search(r"replayed ([\d,]+) events of (\d+) segment\(s\) in ([\d.]+) s: ([\d.]+) s waiting for the "
                     r"survey of the segments to end, ([\d.]+) s applying them", err)
    assert said, err
    events, segments, total, waited, applying = (float(group.replace(",", "")) for group in said.groups())
    assert events > 0 and segments > 0 and abs(waited + applying - total) <= 0.011
    with tls_client(url, pki) as c:
        restored_revision = c.range(b"\0", limit=1).revision
        assert restored_revision == point + 1_000_000_000  # every restore bumps (lifeboat's, etcd 3.5.1)
        assert full_state(c) == expected
        for lease in {lease for *_, lease in expected.values() if lease}:
            assert c.lease_time_to_live(lease).ttl > 0, "a restored key's lease must exist and run"


def test_a_damaged_or_missing_segment_is_refused_never_skipped(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, cli: Cli) -> None:
    repo_dir = tmp_path / "repo"
    repo = open_repository(repo_dir)
    with capture_started(client, repo, capture_options("prod", etcd.client_url, tmp_path / "spool",
                                                 flush_interval=0.1)) as status:
        revisions = []
        for part in range(3):
            revisions += write_history(client, 2, tag=f"part{part}").revisions
            wait_for(lambda: status.last_revision >= revisions[-1])  # each part in its own segment(s)
        wait_for(lambda: status.last_revision >= revisions[-1])
    segments = sorted(repo_dir.rglob("segments/*.seg.zst"))
    assert len(segments) >= 3
    middle = segments[1]
    after_middle = int(middle.name.split("-")[1]) + 1
    data = bytearray(middle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    middle.write_bytes(bytes(data))
    point = find_point(repo, "prod", PointTarget(revision=revisions[-1]), None)
    with pytest.raises(IntegrityError, match="damaged|corrupt") as refused:
        build_point_snapshot(repo, point, None, tmp_path / "out.db")
    assert middle.name in str(refused.value), "the error names the damaged segment"
    assert not (tmp_path / "out.db").exists()
    assert not (tmp_path / "out.db.segments").exists(), "segments fetched ahead must be cleaned up too"
    with ChainSurvey(repo, point, None, tmp_path / "ahead") as survey:  # closed before it finished
        pass
    assert not (tmp_path / "ahead").exists()
    with pytest.raises(OperationFailed, match="damaged|corrupt|stopped"):
        survey.result()  # the damage it found before it was stopped, or that it was stopped

    middle.unlink()
    code, _out, err = cli("restore", "plan", "--to-revision", str(after_middle), "--repo", str(repo_dir),
                          "--initial-cluster", "m0=http://127.0.0.1:2380")
    assert code == 3 and "is missing from the repository" in err
    before_middle = int(segments[0].name.split("-")[1])
    plan = cli.json("restore", "plan", "--to-revision", str(before_middle), "--repo", str(repo_dir),
                    "--initial-cluster", "m0=http://127.0.0.1:2380")
    assert f"--to-revision={before_middle}" in plan["members"][0]["argv"]
    timeline = cli.json("timeline", "--repo", str(repo_dir))
    assert "missing" in timeline[0]["gaps"][0]["reason"]


def test_drill_of_a_point_restores_it_into_a_throwaway_etcd_and_checks_it(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, cli: Cli, release: EtcdRelease) -> None:
    repo_dir = tmp_path / "repo"
    repo = open_repository(repo_dir)
    with capture_started(client, repo, capture_options("prod", etcd.client_url, tmp_path / "spool",
                                                 flush_interval=0.2)) as status:  # the base is taken before the history starts
        history = write_history(client, 4)
        wait_for(lambda: status.last_revision >= history.revisions[-1])
    point = history.revisions[len(history.revisions) // 2]
    report = cli.json("verify", "--drill", "--to-revision", str(point), "--repo", str(repo_dir),
                      "--restore-tool", str(release.etcdutl or release.etcdctl), "--etcd-binary", str(release.etcd))
    checks = {c["name"]: c for c in report["drill_checks"]}
    assert report["ok"] and checks["replay capture"]["ok"]
    assert checks["revision"]["detail"].startswith(f"{point} ")
    # The point is replayed into the fetched snapshot: up front the drill needs its base's room
    # and the segments it stages; what the replay adds is asked once they are surveyed.
    base = cli.json("verify", "latest", "--drill", "--repo", str(repo_dir), "--restore-tool",
                    str(release.etcdutl or release.etcdctl), "--etcd-binary", str(release.etcd))
    found = find_point(repo, "prod", PointTarget(revision=point), None)
    segments, copy = found.segment_bytes, found.base.snapshot.total_size + WAL_SEGMENT_BYTES + MARGIN
    assert base["ok"] and len(base["disk"]) == 1 and segments > 0
    up_front, replay = report["disk"]
    assert up_front["need_bytes"] == base["disk"][0]["need_bytes"] + segments
    assert "the capture segments it replays" in up_front["what"] and "segments" not in base["disk"][0]["what"]
    # Twice the rows: in the snapshot, and in the first restore's copy of it.
    assert replay["what"].startswith("the drill's replay") and replay["need_bytes"] > copy
    code, _out, err = cli("verify", "--to-revision", str(point), "--repo", str(repo_dir))
    assert code == 3 and "--drill" in err


def test_a_drill_of_a_point_whose_replay_would_not_fit_stops_before_writing_a_row(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, release: EtcdRelease) -> None:
    repo = open_repository(tmp_path / "repo")
    with capture_started(client, repo, capture_options("prod", etcd.client_url, tmp_path / "spool",
                                                 flush_interval=0.2)) as status:
        history = write_history(client, 4)
        wait_for(lambda: status.last_revision >= history.revisions[-1])
    point = find_point(repo, "prod", PointTarget(revision=history.revisions[-1]), None)
    spool = tmp_path / "drills"
    spool.mkdir()
    said: list[RoomNeeded] = []

    def disk(path: Path) -> int:
        # Just the room the drill said it needs up front, less what it wrote.
        return said[0].need - used_bytes(spool) if said else 1 << 40

    def replay(snapshot: Path, rows_room: Callable[[int], None]) -> int:
        return build_point_snapshot(repo, point, None, snapshot, base_snapshot=snapshot,
                                    rows_room=rows_room).point.revision

    with pytest.raises(NoRoom, match="the drill's replay"):
        run_drill(repo, point.base, None, choose_writer=lambda tool: native_or(tool, choice=None), tmp_dir=spool,
                  restore_tool=release.etcdutl or release.etcdctl, etcd_binary=release.etcd,
                  replay=DrillReplay(point.segment_bytes, replay), free_space=disk, room=said.append)
    assert [r.enough for r in said] == [True, False] and list(spool.iterdir()) == []


def test_a_k8s_command_at_a_point_refuses_before_downloading_when_its_base_and_segments_do_not_fit(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    repo_dir = tmp_path / "repo"
    repo = open_repository(repo_dir)
    with capture_started(client, repo, capture_options("prod", etcd.client_url, tmp_path / "spool",
                                                 flush_interval=0.2)) as status:
        history = write_history(client, 4)
        wait_for(lambda: status.last_revision >= history.revisions[-1])
    point = find_point(repo, "prod", PointTarget(revision=history.revisions[-1]), None)
    snapshot = next(o.raw_size for o in point.base.objects if o.name.startswith("snapshot"))
    small = tmp_path / "small-disk"
    small.mkdir()
    statvfs = os.statvfs

    def a_small_disk(path: Any) -> Any:
        # Room for the base's snapshot, not for the segments the replay stages beside it.
        real = statvfs(path)
        if not str(path).startswith(str(small)):
            return real
        free = snapshot + MARGIN + point.segment_bytes // 2
        return os.statvfs_result((real.f_bsize, 1, *real[2:4], free, *real[5:]))  # in bytes

    monkeypatch.setattr(os, "statvfs", a_small_disk)
    code, _out, err = cli("k8s", "ls", "latest", "--to-revision", str(point.revision), "--repo", str(repo_dir),
                          "--tmp-dir", str(small))
    assert code == 5, err
    assert "the capture segments it replays" in err and list(small.iterdir()) == []


def test_synthetic_full_backup_is_a_backup_and_the_base_of_later_points(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, cli: Cli, release: EtcdRelease) -> None:
    repo_dir = tmp_path / "repo"
    repo = open_repository(repo_dir)
    with capture_started(client, repo, capture_options("prod", etcd.client_url, tmp_path / "spool",
                                                 flush_interval=0.1)) as status:
        early = write_history(client, 3, tag="early")
        time.sleep(0.3)
        late = write_history(client, 3, tag="late")
        wait_for(lambda: status.last_revision >= late.revisions[-1])
    folded = early.revisions[-1]
    synthetic = cli.json("synthesize", "--to-revision", str(folded), "--repo", str(repo_dir))
    assert synthetic["snapshot"]["revision"] == folded
    assert synthetic["labels"]["lifeboat.synthetic-revision"] == str(folded)
    assert restored_state_of(repo, synthetic["id"], tmp_path) == source_state(client, folded)

    later = late.revisions[2]
    point = find_point(repo, "prod", PointTarget(revision=later), None)
    assert point.base.id == synthetic["id"] and point.base_revision == folded
    built = build_point_snapshot(repo, point, None, tmp_path / "later.db")
    assert restored_state(built.path) == source_state(client, later)

    drill = cli.json("verify", str(synthetic["id"]), "--drill", "--repo", str(repo_dir),
                     "--restore-tool", str(release.etcdutl or release.etcdctl), "--etcd-binary", str(release.etcd))
    assert drill["ok"]

    # The chain's own base, named, is the base of the later point too (the synthetic one may
    # be damaged): its segments still reach it.
    original = point.window.base.id
    code, out, err = cli("k8s", "ls", original, "--to-revision", str(later), "--repo", str(repo_dir), "-o", "json")
    assert code == 0, err
    named = find_point(repo, "prod", PointTarget(revision=later), None, original)
    assert named.base.id == original and named.base_revision < folded
    from_original = build_point_snapshot(repo, named, None, tmp_path / "later-from-original.db")
    assert restored_state(from_original.path) == source_state(client, later)


def backup_while_capturing(cli: Cli, etcd: EtcdMember, repo_dir: Path) -> dict[str, Any]:
    """A backup of cluster prod as the agent's schedule or a cron job takes it, capture or not."""
    return cli.json("backup", "--endpoints", etcd.client_url, "--repo", str(repo_dir), "--cluster", "prod",
                    "--no-files")  # type: ignore[return-value]


def test_a_backup_taken_while_capture_runs_is_the_base_of_later_points(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, cli: Cli) -> None:
    repo_dir = tmp_path / "repo"
    repo = open_repository(repo_dir)
    with capture_started(client, repo, capture_options("prod", etcd.client_url, tmp_path / "spool",
                                                 flush_interval=0.1)) as status:
        early = write_history(client, 3, tag="early")
        wait_for(lambda: status.last_revision >= early.revisions[-1])
        scheduled = backup_while_capturing(cli, etcd, repo_dir)
        late = write_history(client, 3, tag="late")
        wait_for(lambda: status.last_revision >= late.revisions[-1])
        chain = status.chain
    assert early.revisions[-1] <= scheduled["snapshot"]["revision"] < late.revisions[0]
    (window,) = [w for w in cluster_timeline(repo, "prod").windows if w.chain is not None]
    assert window.base.id == chain and [m.id for m in window.passing] == [scheduled["id"]]
    for revision in (late.revisions[0], late.revisions[-1]):
        point = find_point(repo, "prod", PointTarget(revision=revision), None)
        assert point.base.id == scheduled["id"] and point.base_revision == scheduled["snapshot"]["revision"]
        assert point.segments[0].last_revision > scheduled["snapshot"]["revision"]
        built = build_point_snapshot(repo, point, None, tmp_path / f"at-{revision}.db")
        assert restored_state(built.path) == source_state(client, revision)
    (ended,) = [b for b in cli.json("list", "--repo", str(repo_dir)) if b["id"] == scheduled["id"]]
    assert ended["window_end"]["revision"] == window.last_revision
    (shown,) = cli.json("timeline", "--repo", str(repo_dir), "-o", "json")
    assert [w["taken_while_capturing"] for w in shown["windows"]] == [[scheduled["id"]]]


def test_a_backup_taken_while_capture_runs_whose_last_row_is_below_its_compaction_restores_later_points_exactly(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, cli: Cli) -> None:
    """etcd compacted away the tombstone of its newest revision: the backup's last row is below
    the revision its state is at. The replay after it must not write the compacted revisions."""
    repo_dir = tmp_path / "repo"
    repo = open_repository(repo_dir)
    with capture_started(client, repo, capture_options("prod", etcd.client_url, tmp_path / "spool",
                                                 flush_interval=0.1)) as status:
        write_history(client, 2, tag="early")
        client.put("/registry/gone/old", b"older than the backup's last row")
        last_row = client.put("/registry/kept", b"the backup's last row")
        client.put("/registry/gone/x", b"short-lived")
        client.put("/registry/gone/y", b"short-lived")
        client.delete_range("/registry/gone/", prefix=True)  # gone/old too: its rows all go
        compacted = client.status(etcd.client_url).revision
        wait_for(lambda: status.last_revision >= compacted)  # the watch is past it before etcd compacts
        client.compact(compacted, physical=True)
        scheduled = backup_while_capturing(cli, etcd, repo_dir)
        late = write_history(client, 2, tag="late")
        wait_for(lambda: status.last_revision >= late.revisions[-1])
    assert scheduled["snapshot"]["revision"] == last_row < compacted
    assert scheduled["labels"]["lifeboat.state-revision"] == str(compacted)
    for revision in (late.revisions[0], late.revisions[-1]):
        point = find_point(repo, "prod", PointTarget(revision=revision), None)
        assert point.base.id == scheduled["id"] and point.base_revision == compacted
        built = build_point_snapshot(repo, point, None, tmp_path / f"at-{revision}.db")
        assert restored_state(built.path) == source_state(client, revision)
        written = [decode_revision(k)[0] for k, _v in key_rows(built.path, last_row)]
        assert written and min(written) > compacted  # nothing of the compacted revisions
    # Between its last row and its state the backup is not the base: it lacks gone/old.
    between = find_point(repo, "prod", PointTarget(revision=last_row + 1), None)
    assert between.base.id != scheduled["id"]
    built = build_point_snapshot(repo, between, None, tmp_path / "between.db")
    assert b"/registry/gone/old" in [row[0] for row in restored_state(built.path)]


def restored_state_of(repo: BackupRepository, backup_id: str, tmp_path: Path) -> list[tuple[bytes, bytes, int, int, int, int]]:
    from lifeboat.verify.backup import verify_backup
    path = tmp_path / f"{backup_id}.db"
    report = verify_backup(repo, repo.find(backup_id, "prod"), None, tmp_dir=tmp_path, keep_snapshot=path)
    assert report.ok
    return restored_state(path)


def encrypted_capture(etcd: EtcdMember, tmp_path: Path, flush_interval: float) -> tuple[CaptureOptions, Path, str]:
    """Capture options encrypting to a new age key; the key's file and its public recipient."""
    import dataclasses

    import pyrage

    from lifeboat.catalog.age_keys import load_recipients
    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "age-key.txt"
    key_file.write_text(f"{identity}\n")
    key_file.chmod(0o600)
    public = str(identity.to_public())
    options = capture_options("prod", etcd.client_url, tmp_path / "spool", flush_interval=flush_interval)
    return dataclasses.replace(options, backup=dataclasses.replace(
        options.backup, recipients=tuple(load_recipients([public])))), key_file, public


def test_encrypted_capture_needs_the_identity_and_restores_exactly_with_it(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, s3_repo: str, cli: Cli) -> None:
    from lifeboat.catalog.age_keys import load_identities
    repo = open_repository(s3_repo)
    options, key_file, _ = encrypted_capture(etcd, tmp_path, 0.2)
    with capture_started(client, repo, options) as status:
        history = write_history(client, 3)
        wait_for(lambda: status.last_revision >= history.revisions[-1])
    assert all(o.key.endswith(".age") for o in repo.store.list("clusters/prod/chains/") if "/segments/" in o.key)
    point = history.revisions[-2]
    found = find_point(repo, "prod", PointTarget(revision=point), None)
    with pytest.raises(UsageError, match="encrypted"):
        build_point_snapshot(repo, found, None, tmp_path / "no-key.db")
    built = build_point_snapshot(repo, found, load_identities([str(key_file)]), tmp_path / "with-key.db")
    assert restored_state(built.path) == source_state(client, point)

    # The k8s commands read the segments with the config file's identity, as verify does (they
    # read only --identity, and a config naming the key did not decrypt).
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"encryption: {{identity-files: ['{key_file}']}}\n")
    flags = ("--repo", s3_repo, "--cluster", "prod", "--config", str(config))
    versions = cli.json("k8s", "history", "/registry/r/0000/a", *flags)["versions"]
    assert [(v["change"], v["version"]) for v in versions] == [("put", 1), ("put", 2)]
    at_point = cli.json("k8s", "ls", "latest", "--to-revision", str(point), *flags)
    assert at_point["revision"] == point


def captured_point(node: Node, pki: Pki, tmp_path: Path) -> tuple[int, dict[bytes, tuple[bytes, int, int, int, int]]]:
    """A revision captured on the kubeadm node after its base backup, and the source state there."""
    with tls_client(node.etcd.client_url, pki) as c:
        with node_capture(c, node, open_repository(node.repo), tmp_path / "spool") as status:
            history = write_history(c, 3, tag="point")
            wait_for(lambda: status.last_revision >= history.revisions[-1])
            write_history(c, 1, tag="after")
        point = history.revisions[-1]
        return point, full_state(c, point)


def flip_byte(path: Path, offset: int) -> None:
    """One bit of ``path`` changes on disk, as a failing disk or a stray write changes it."""
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x01]))


@pytest.mark.parametrize("stopped", ["after the fetch", "during the replay"])
def test_a_point_restore_stopped_before_it_changed_the_node_fetches_and_checks_its_base_again(
        kubeadm_node: Node, cli: Cli, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        stopped: str) -> None:
    node = kubeadm_node
    point, expected = captured_point(node, pki, tmp_path)
    fetched = node.host("/var/lib/etcd.lifeboat-work/snapshot.db")
    base_size: list[int] = []

    def crash(*args: object, **kw: object) -> None:
        raise KeyboardInterrupt  # lifeboat killed here
    if stopped == "after the fetch":
        monkeypatch.setattr(ReplayCapture, "run", lambda self, ctx: (base_size.append(fetched.stat().st_size), crash()))
    else:
        # The replay's new pages and the new db's trailer are written, its meta page is not.
        original = build_point_snapshot
        monkeypatch.setattr(steps, "build_point_snapshot",
                            lambda *a, **kw: (base_size.append(fetched.stat().st_size), original(*a, **kw)))
        monkeypatch.setattr(writer, "_write_meta", crash)
    code, _out, err = cli("restore", "--to-revision", str(point), *node.flags)
    assert code == 130, err
    monkeypatch.undo()
    journal = json.loads(journal_path(node.host("/var/lib/etcd")).read_text())
    assert "fetch-snapshot" in journal["done"] and "replay-capture" not in journal["done"]
    assert not journal["node_changed"]
    assert (fetched.stat().st_size > base_size[0]) == (stopped == "during the replay")

    flip_byte(fetched, base_size[0] // 3)  # in the base's pages, between the two runs
    result = cli.json("restore", "--to-revision", str(point), *node.flags)
    # Nothing changed the node before the replay, so the re-run is a new restore: the damaged
    # file is never replayed onto, the base is downloaded and checked again.
    assert result["ran"][:3] == ["preflight", "fetch-snapshot", "replay-capture"]
    with tls_client(node.etcd.client_url, pki) as c:
        assert full_state(c) == expected


def killed_after_the_replay(node: Node, cli: Cli, point: int, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``restore --to-revision point`` killed after the replay, once etcd is stopped and its data dir moved
    aside: its journal."""
    def crash(self: RestoreData, ctx: object) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr(RestoreData, "run", crash)
    assert cli("restore", "--to-revision", str(point), *node.flags)[0] == 130
    monkeypatch.undo()
    journal: dict[str, Any] = json.loads(journal_path(node.host("/var/lib/etcd")).read_text())
    assert journal["node_changed"] and "replay-capture" in journal["done"]
    return journal


def test_a_resumed_point_restore_refuses_its_snapshot_damaged_on_disk_and_says_how_to_go_on(
        kubeadm_node: Node, cli: Cli, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = kubeadm_node
    point, expected = captured_point(node, pki, tmp_path)
    with tls_client(node.etcd.client_url, pki) as c:
        before = full_state(c)

    killed_after_the_replay(node, cli, point, monkeypatch)
    moved = sorted(node.host("/var/lib").glob("etcd.lifeboat-moved-*"))
    assert len(moved) == 1 and not node.host("/var/lib/etcd").exists()

    fetched = node.host("/var/lib/etcd.lifeboat-work/snapshot.db")
    flip_byte(fetched, fetched.stat().st_size // 3)  # the replayed snapshot rots between the two runs
    code, _out, err = cli("restore", "--to-revision", str(point), *node.flags)
    assert code == 1, err
    line = err.strip().splitlines()[-1]
    assert str(fetched) in line and "sha256" in line and "lifeboat restore --rollback" in line, line
    assert not node.host("/var/lib/etcd").exists() and moved[0].is_dir()  # nothing restored from it
    assert not node.host("/var/lib/etcd.lifeboat-work/data").exists()

    # What the error says to do: roll back, and restore again (fetched afresh).
    cli.json("restore", "--rollback", "--root", str(node.root))
    node.etcd.wait_healthy()
    with tls_client(node.etcd.client_url, pki) as c:
        assert full_state(c) == before
    result = cli.json("restore", "--to-revision", str(point), *node.flags)
    assert "fetch-snapshot" in result["ran"]
    with tls_client(node.etcd.client_url, pki) as c:
        assert full_state(c) == expected


def test_a_point_restore_resumes_with_its_journaled_base_after_a_newer_base_appeared(
        kubeadm_node: Node, cli: Cli, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = kubeadm_node
    point, expected = captured_point(node, pki, tmp_path)

    journal = killed_after_the_replay(node, cli, point, monkeypatch)

    # Between the two runs a base nearer the point appears: a new restore would start from it.
    synthetic = cli.json("synthesize", "--to-revision", str(point - 1), "--repo", node.repo)
    assert find_point(open_repository(node.repo), "default", PointTarget(revision=point), None).base.id \
        == synthetic["id"] != journal["backup_id"]

    # The resume goes on with the base it fetched and replayed, never the new one.
    result = cli.json("restore", "--to-revision", str(point), *node.flags)
    assert "fetch-snapshot" not in result["ran"] and "restore-data" in result["ran"]
    assert journal["backup_id"] in result["title"] and synthetic["id"] not in result["title"]
    with tls_client(node.etcd.client_url, pki) as c:
        assert full_state(c) == expected


def test_a_resumed_point_restore_whose_base_was_deleted_says_to_roll_back_and_restore_again(
        kubeadm_node: Node, cli: Cli, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = kubeadm_node
    point, expected = captured_point(node, pki, tmp_path)
    journal = killed_after_the_replay(node, cli, point, monkeypatch)

    # Deleted between the two runs (by hand: --force, since it is the base of the chain just captured).
    cli.json("delete", journal["backup_id"], "--yes", "--force", "--repo", node.repo)
    code, out, err = cli("restore", "--to-revision", str(point), *node.flags)
    assert (code, out) == (3, "")
    line = err.strip().splitlines()[-1]
    assert journal["backup_id"] in line, line
    assert "'lifeboat restore --rollback'" in line and "restore again" in line, line
    assert not node.host("/var/lib/etcd").exists()  # nothing restored

    # What the error says to do first: the rollback puts the node back as it was, with the
    # writes made after the point.
    cli.json("restore", "--rollback", "--root", str(node.root))
    node.etcd.wait_healthy()
    with tls_client(node.etcd.client_url, pki) as c:
        # Its own history, not a restore's: no revision bump, the point still readable there.
        assert point < c.range(b"\0", limit=1).revision < point + 1_000_000 and full_state(c, point) == expected


def test_a_resumed_restore_whose_repository_is_away_says_the_rollback_needs_none(
        kubeadm_node: Node, cli: Cli, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's member is stopped and its data dir moved aside when the repository stops
    answering: the error says how to get back without it."""
    node = kubeadm_node
    point, _expected = captured_point(node, pki, tmp_path)
    killed_after_the_replay(node, cli, point, monkeypatch)
    repository = Path(node.repo.removeprefix("file://"))
    repository.rename(repository.with_name("away"))
    code, out, err = cli("restore", "--to-revision", str(point), *node.flags)
    line = err.strip().splitlines()[-1]
    assert code == 2 and out == "" and "no lifeboat repository" in line, line
    assert "unfinished restore journaled in" in line and "'lifeboat restore --rollback'" in line, line
    code, out, err = cli("restore", "--rollback", "--root", str(node.root))
    assert code == 0 and "rolled back:" in out, err
    # It stopped before the restored data dir was renamed into place: none is set aside.
    assert "no restored data had been put in its place" in out and "None" not in out, out
    node.etcd.wait_healthy()


def a_free_page_byte(snapshot: Path) -> int:
    """Where a byte of a page no tree and no freelist holds is: only a hash reads it. (A byte a
    third into the file could be in a page the replay parses: then it was refused as corrupt
    before any hash; about 1 run in 8 under load.)"""
    with BoltFile.open(snapshot) as db:
        seen = db.new_seen()
        db.freed_pages(seen)  # marks the freelist's own pages, when there is one
        db.mark_nested(BucketRef(db.meta.root), seen)
        free = [pgid for pgid in range(2, len(seen)) if not seen[pgid]]
        assert free, "the base has no free page"
        return free[len(free) // 2] * db.page_size + db.page_size // 2


def restore_of_a_base_that_rots_before_its_replay(node: Node, cli: Cli, point: int, monkeypatch: pytest.MonkeyPatch,
                                                   *flags: str) -> tuple[Path, str]:
    """A point restore whose fetched base has a bit flipped on disk after the fetch checked it:
    the fetched file and the failed restore's last line (it must exit 1)."""
    fetched = node.host("/var/lib/etcd.lifeboat-work/snapshot.db")
    replay = ReplayCapture.run

    def rot_then_replay(self: ReplayCapture, ctx: object) -> None:
        flip_byte(fetched, a_free_page_byte(fetched))
        replay(self, ctx)  # type: ignore[arg-type]
    monkeypatch.setattr(ReplayCapture, "run", rot_then_replay)
    code, _out, err = cli("restore", "--to-revision", str(point), *flags, *node.flags)
    monkeypatch.undo()
    assert code == 1, err
    return fetched, err.strip().splitlines()[-1]


def test_a_base_damaged_between_its_fetch_and_the_replay_is_refused_not_certified(
        kubeadm_node: Node, cli: Cli, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay no longer hashes the base's bytes into a new trailer of its own: the commit of
    the restored db checks them against the base's trailer, so a bit flipped on disk after the
    fetch's check is caught before anything is restored from it."""
    node = kubeadm_node
    point, expected = captured_point(node, pki, tmp_path)
    fetched, line = restore_of_a_base_that_rots_before_its_replay(node, cli, point, monkeypatch)
    assert str(fetched) in line and "base snapshot's pages no longer match its sha256 trailer" in line, line
    assert not node.host("/var/lib/etcd").exists()  # nothing restored from it; the old data stays aside

    # Resumed, the damaged file is checked first and refused; rolled back and restored afresh it is right.
    code, _out, err = cli("restore", "--to-revision", str(point), *node.flags)
    assert code == 1 and "lifeboat restore --rollback" in err.strip().splitlines()[-1], err
    cli.json("restore", "--rollback", "--root", str(node.root))
    node.etcd.wait_healthy()
    result = cli.json("restore", "--to-revision", str(point), *node.flags)
    assert "fetch-snapshot" in result["ran"]
    with tls_client(node.etcd.client_url, pki) as c:
        assert full_state(c) == expected


def test_a_base_damaged_between_its_fetch_and_a_replay_that_writes_a_trailer_is_refused(
        kubeadm_node: Node, cli: Cli, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With --restore-with tool the replay gives the file a new trailer (for the tool's own check,
    as drills and k8s commands do): it checks the base's bytes against the base's trailer in the
    pass that computes it, so a bit flipped after the fetch's check is not certified."""
    node = kubeadm_node
    point, _expected = captured_point(node, pki, tmp_path)
    fetched, line = restore_of_a_base_that_rots_before_its_replay(node, cli, point, monkeypatch,
                                                                 "--restore-with", "tool")
    assert str(fetched) in line and "pages changed since it was fetched and checked" in line, line
    assert not fetched.exists()  # the decrypted base goes, as a fetch that failed its checks does


# A point-in-time restore SIGKILLed during the replay (while its pages are written; once its
# record is kept, before its meta) and during the commit of the restored db (while its pages
# are written and checked; once committed, before the move into the data dir).
_KILLED_IN_A_POINT_RESTORE = """
import os, signal, sys
import lifeboat.restore.native as native
import lifeboat.snapshot.writer as writer
def kill(*args, **kw):
    os.kill(os.getpid(), signal.SIGKILL)
point = os.environ["KILL_AT"]
if point == "replay pages":
    writer._range_sha256 = kill
elif point == "replay recorded":
    keep = native.replace_durably
    native.replace_durably = lambda path, data: (keep(path, data), path.name.endswith(".replayed") and kill())
elif point == "commit pages":
    writer.replayed_difference = kill
else:
    rename = os.rename
    os.rename = lambda a, b: kill() if str(a).endswith("snapshot.db") else rename(a, b)
from lifeboat.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("kill_at", ["replay pages", "replay recorded", "commit pages", "committed"])
def test_a_point_restore_killed_in_its_replay_or_its_commit_resumes_to_the_point_checked(
        kubeadm_node: Node, cli: Cli, pki: Pki, tmp_path: Path, kill_at: str) -> None:
    import signal
    import sys

    node = kubeadm_node
    point, expected = captured_point(node, pki, tmp_path)
    killed = subprocess.run([sys.executable, "-c", _KILLED_IN_A_POINT_RESTORE, "restore", "--to-revision", str(point),
                             *node.flags], capture_output=True, timeout=300, check=False,
                            env={**os.environ, "KILL_AT": kill_at})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    work = node.host("/var/lib/etcd.lifeboat-work")
    in_replay = kill_at.startswith("replay")
    assert (work / "snapshot.db.replayed").is_file() == (kill_at != "replay pages")
    assert (work / "snapshot.db.overwritten").is_file() == (not in_replay)
    journal = json.loads(journal_path(node.host("/var/lib/etcd")).read_text())
    assert ("replay-capture" in journal["done"]) == (not in_replay) and "restore-data" not in journal["done"]

    result = cli.json("restore", "--to-revision", str(point), *node.flags)
    # Killed in the replay, the node was not changed yet: a new restore fetches and checks again.
    # Killed in the commit, it resumes there: undone, checked against the base's trailer and the
    # replay's record, committed again.
    assert ("fetch-snapshot" in result["ran"]) == in_replay and "restore-data" in result["ran"]
    with tls_client(node.etcd.client_url, pki) as c:
        assert full_state(c) == expected
    assert not work.exists()


def test_packed_segments_restore_every_revision_exactly_and_the_ones_they_hold_go(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, s3_repo: str, cli: Cli) -> None:
    from lifeboat.catalog.age_keys import load_identities
    repo = open_repository(s3_repo)
    options, key_file, public = encrypted_capture(etcd, tmp_path, 0.05)
    revisions: list[int] = []
    with capture_started(client, repo, options) as status:
        for round_ in range(6):  # small segments: one round at a time, each committed before the next
            history = write_history(client, 1, tag=f"r{round_}")
            revisions += history.revisions
            wait_for(lambda: status.last_revision >= history.revisions[-1])
            time.sleep(0.1)

    def segments() -> list[str]:
        return sorted(o.key for o in repo.store.list("clusters/prod/chains/") if "/segments/" in o.key)

    small = segments()
    assert len(small) >= 6
    flags = ("--repo", s3_repo, "--cluster", "prod", "--identity", str(key_file), "--min-age", "0")
    code, out, err = cli("pack", *flags, "--delete-after", "0")
    assert code == 1 and "no recipient" in err and segments() == small  # never written unencrypted
    planned = cli.json("pack", *flags, "--encrypt-to", public, "--delete-after", "0", "--dry-run")
    assert (planned["runs"], planned["packed"], planned["deleted"]) == (1, len(small) - 1, 0)
    code, out, _ = cli("pack", *flags, "--encrypt-to", public, "--dry-run")
    assert code == 0 and f"would pack {len(small) - 1} capture segment(s) in 1 run(s)" in out and segments() == small
    packed = cli.json("pack", *flags, "--encrypt-to", public, "--delete-after", "0")
    assert packed["packs"] == 1 and packed["packed"] == len(small) - 1 and packed["deleted"] == 0
    assert len(segments()) == len(small) + 1  # the pack beside what it holds until a later run
    deleted = cli.json("pack", *flags, "--encrypt-to", public, "--delete-after", "0")
    assert (deleted["packs"], deleted["deleted"], deleted["refused"]) == (0, len(small) - 1, [])
    assert len(segments()) == 2 and all(key.endswith(".age") for key in segments())

    identities = load_identities([str(key_file)])
    for revision in sorted({revisions[0], revisions[3], revisions[len(revisions) // 2], revisions[-2], revisions[-1]}):
        point = find_point(repo, "prod", PointTarget(revision=revision), identities)
        built = build_point_snapshot(repo, point, identities, tmp_path / f"at-{revision}.db")
        assert restored_state(built.path) == source_state(client, revision), f"state differs at {revision}"
    timeline = cli.json("timeline", "--repo", s3_repo, "--cluster", "prod")
    (window,) = [w for t in timeline for w in t["windows"] if w["segments"]]
    assert window["segments"] == 2 and window["last_revision"] == revisions[-1]


def test_packing_while_capture_writes_on_leaves_one_unbroken_chain_that_restores_exactly(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, s3_repo: str, cli: Cli) -> None:
    repo = open_repository(s3_repo)
    revisions: list[int] = []
    flags = ("--repo", s3_repo, "--cluster", "prod", "--min-age", "0", "--delete-after", "0")
    passes = []
    with capture_started(client, repo, capture_options("prod", etcd.client_url, tmp_path / "spool",
                                                       flush_interval=0.05)) as status:
        for round_ in range(8):
            history = write_history(client, 1, tag=f"r{round_}")
            revisions += history.revisions
            if round_ in (2, 3, 5, 6):  # packs, then deletions, while capture commits segments
                passes.append(cli.json("pack", *flags))
            wait_for(lambda: status.last_revision >= history.revisions[-1])
            time.sleep(0.1)
    passes += [cli.json("pack", *flags), cli.json("pack", *flags)]
    assert all(p["refused"] == [] for p in passes)
    assert sum(p["packs"] for p in passes) >= 3 and sum(p["deleted"] for p in passes) >= 6
    (timeline,) = cli.json("timeline", "--repo", s3_repo, "--cluster", "prod")
    assert timeline["gaps"] == []
    (window,) = [w for w in timeline["windows"] if w["segments"]]
    assert window["last_revision"] == revisions[-1] and window["segments"] <= 3
    for revision in sorted({revisions[1], revisions[12], revisions[25], revisions[-3], revisions[-1]}):
        point = find_point(repo, "prod", PointTarget(revision=revision), None)
        built = build_point_snapshot(repo, point, None, tmp_path / f"at-{revision}.db")
        assert restored_state(built.path) == source_state(client, revision), f"state differs at {revision}"


def test_a_point_listed_before_its_segments_were_packed_and_deleted_restores_from_the_pack(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, s3_repo: str, cli: Cli,
        caplog: pytest.LogCaptureFixture) -> None:
    repo = open_repository(s3_repo)
    revisions: list[int] = []
    with capture_started(client, repo, capture_options("prod", etcd.client_url, tmp_path / "spool",
                                                       flush_interval=0.05)) as status:
        for round_ in range(5):
            history = write_history(client, 1, tag=f"r{round_}")
            revisions += history.revisions
            wait_for(lambda: status.last_revision >= history.revisions[-1])
            time.sleep(0.1)
    chosen = sorted({revisions[len(revisions) // 2], revisions[-2], revisions[-1]})
    listed = {revision: find_point(repo, "prod", PointTarget(revision=revision), None) for revision in chosen}
    assert all(len(point.segments) >= 2 for point in listed.values()), "points over several segments"
    flags = ("--repo", s3_repo, "--cluster", "prod", "--min-age", "0", "--delete-after", "0")
    assert cli.json("pack", *flags)["packs"] == 1
    assert cli.json("pack", *flags)["deleted"] >= 4  # what the listings above name is gone
    for revision, stale in listed.items():
        with caplog.at_level("WARNING", logger="lifeboat.pitr.point"):
            built = build_point_snapshot(repo, stale, None, tmp_path / f"at-{revision}.db")
        assert restored_state(built.path) == source_state(client, revision), f"state differs at {revision}"
        assert built.point.segments != stale.segments and built.point.base.id == stale.base.id
    assert "packed and deleted since it was listed" in caplog.text

    # A segment deleted with nothing in its place is still missing: refused, never skipped.
    point = find_point(repo, "prod", PointTarget(revision=revisions[-1]), None)
    assert point.window.chain is not None
    repo.store.delete(segment_key("prod", point.window.chain.info.chain, point.segments[0].name))
    with pytest.raises(IntegrityError, match="is missing; the chain cannot be replayed past it"):
        build_point_snapshot(repo, point, None, tmp_path / "gone.db")
    assert not (tmp_path / "gone.db").exists() and not (tmp_path / "gone.db.segments").exists()


def test_a_point_restore_whose_segments_are_packed_and_deleted_after_its_plan_restores_from_the_pack(
        kubeadm_node: Node, cli: Cli, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    node = kubeadm_node
    repo = open_repository(node.repo)
    with tls_client(node.etcd.client_url, pki) as c:
        with node_capture(c, node, repo, tmp_path / "spool") as status:
            revisions: list[int] = []
            for round_ in range(4):  # a segment per round
                revisions += write_history(c, 1, tag=f"r{round_}").revisions
                wait_for(lambda: status.last_revision >= revisions[-1])
                time.sleep(0.3)
        point = revisions[-2]
        expected = full_state(c, point)
    packer = Packer(repo.chain_store, None, [], 3, min_age=timedelta(0), delete_after=timedelta(0))
    passes = []
    original = steps.FetchSnapshot.run

    def packed_then_fetched(self: steps.FetchSnapshot, ctx: object) -> None:
        # After the plan listed the chain, before the survey of its segments starts.
        passes.extend(packer.run("default", datetime.now(UTC)) for _ in range(2))
        original(self, ctx)  # type: ignore[arg-type]

    monkeypatch.setattr(steps.FetchSnapshot, "run", packed_then_fetched)
    with caplog.at_level("WARNING", logger="lifeboat.pitr.point"):
        code, out, err = cli("restore", "--to-revision", str(point), *node.flags, "-o", "json")
    assert code == 0, err
    assert passes[0].packs >= 1 and passes[1].deleted >= 2, passes
    assert "packed and deleted since it was listed" in caplog.text and "replay-capture" in json.loads(out)["ran"]
    with tls_client(node.etcd.client_url, pki) as c:
        assert full_state(c) == expected


def used_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def on_a_disk_of_the_room_said_up_front(node: Node, monkeypatch: pytest.MonkeyPatch, spare: int = 0) -> Path:
    """From now on a restore on ``node`` finds (in its checks and its writer's) a filesystem with
    the room its preflight says it needs and ``spare`` bytes more, less what it writes into its
    work dir; that work dir."""
    work = node.host("/var/lib/etcd.lifeboat-work")
    needs: list[int] = []
    preflight = steps.Preflight.check

    def said_up_front(self: steps.Preflight, ctx: object) -> None:
        needs.append(self.need_bytes)
        preflight(self, ctx)  # type: ignore[arg-type]

    def disk(path: Path) -> int:
        return needs[0] + MARGIN + spare - (used_bytes(work) if work.exists() else 0)

    monkeypatch.setattr(steps.Preflight, "check", said_up_front)
    monkeypatch.setattr(restore_cli, "RestoreContext", functools.partial(steps.RestoreContext, free_space=disk))
    monkeypatch.setattr(writer_module, "shutil", SimpleNamespace(disk_usage=lambda path: SimpleNamespace(free=disk(path))))
    return work


@pytest.mark.parametrize("writer", ["lifeboat", "tool"])
def test_a_point_restore_whose_replay_would_not_fit_stops_before_writing_a_row_and_resumes_when_it_fits(
        kubeadm_node: Node, cli: Cli, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str) -> None:
    node = kubeadm_node
    point, expected = captured_point(node, pki, tmp_path)
    work = on_a_disk_of_the_room_said_up_front(node, monkeypatch)
    code, _out, err = cli("restore", "--to-revision", str(point), "--restore-with", writer, *node.flags)
    monkeypatch.undo()

    assert code == 5, err
    assert "the replay (the rows it adds to the snapshot" in err and "nothing on the node was changed" in err
    journal = json.loads(journal_path(node.host("/var/lib/etcd")).read_text())
    assert "fetch-snapshot" in journal["done"] and "replay-capture" not in journal["done"]
    assert not journal["node_changed"]
    # The decrypted base goes (the next run fetches it again), and the segments staged beside it.
    assert sorted(p.name for p in work.iterdir()) == []

    result = cli.json("restore", "--to-revision", str(point), "--restore-with", writer, *node.flags)
    assert "replay-capture" in result["ran"]
    with tls_client(node.etcd.client_url, pki) as c:
        assert full_state(c) == expected


@pytest.mark.parametrize("writer", ["lifeboat", "tool"])
def test_a_point_restore_needs_room_for_the_rows_it_writes_not_for_every_event_of_its_chain(
        kubeadm_node: Node, cli: Cli, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str) -> None:
    # A key written over and over (a lease holder, a status) has one row at the point: the room
    # for every one of its records is not needed, and a disk without it restores the point.
    node = kubeadm_node
    with tls_client(node.etcd.client_url, pki) as c:
        with node_capture(c, node, open_repository(node.repo), tmp_path / "spool") as status:
            for n in range(300):
                point = c.put("/registry/leases/kube-system/holder", bytes([n % 251]) * 20_000)
            wait_for(lambda: status.last_revision >= point)
        expected = full_state(c, point)
    on_a_disk_of_the_room_said_up_front(node, monkeypatch, spare=2 << 20)  # not the 6 MB of records
    result = cli.json("restore", "--to-revision", str(point), "--restore-with", writer, *node.flags)
    monkeypatch.undo()
    assert "replay-capture" in result["ran"]
    with tls_client(node.etcd.client_url, pki) as c:
        assert full_state(c) == expected


def packed_before_each_call(monkeypatch: pytest.MonkeyPatch, module: object, name: str,
                            repo: BackupRepository) -> list[Any]:
    """``module.name`` runs after two ``lifeboat pack`` passes over cluster prod (the first
    packs, the second deletes what the packs hold); the passes' results."""
    packer = Packer(repo.chain_store, None, [], 3, min_age=timedelta(0), delete_after=timedelta(0))
    original = getattr(module, name)
    passes: list[Any] = []

    def packed_first(*args: Any, **kw: Any) -> Any:
        passes.extend(packer.run("prod", datetime.now(UTC)) for _ in range(2))
        return original(*args, **kw)

    monkeypatch.setattr(module, name, packed_first)
    return passes


def test_a_synthetic_backup_of_a_point_whose_segments_were_packed_while_it_was_built_is_written(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    repo_dir = tmp_path / "repo"
    repo = open_repository(repo_dir)
    revisions: list[int] = []
    with capture_started(client, repo, capture_options("prod", etcd.client_url, tmp_path / "spool",
                                                       flush_interval=0.05)) as status:
        for round_ in range(4):
            revisions += write_history(client, 1, tag=f"r{round_}").revisions
            wait_for(lambda: status.last_revision >= revisions[-1])
            time.sleep(0.1)
    passes = packed_before_each_call(monkeypatch, synthetic, "build_point_snapshot", repo)  # after its listing
    point = revisions[len(revisions) // 2]  # its last segment is in a pack
    made = cli.json("synthesize", "--to-revision", str(point), "--repo", str(repo_dir))
    assert passes[1].deleted >= 2, passes
    assert made["snapshot"]["revision"] == point
    monkeypatch.undo()
    built = build_point_snapshot(repo, find_point(repo, "prod", PointTarget(revision=point), None), None,
                                 tmp_path / "again.db")
    assert built.point.base.id == made["id"] and restored_state(built.path) == source_state(client, point)


def test_history_read_across_a_pack_that_deleted_its_listed_segments_misses_no_version(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    repo = open_repository(tmp_path / "repo")
    key = b"/registry/configmaps/default/settings"
    revisions: list[int] = []
    with capture_started(client, repo, capture_options("prod", etcd.client_url, tmp_path / "spool",
                                                       flush_interval=0.05)) as status:
        for round_ in range(5):  # a segment or more per round, each with a version of the key
            revisions.append(client.put(key, f"v{round_}".encode()))
            revisions += write_history(client, 1, tag=f"r{round_}").revisions
            wait_for(lambda: status.last_revision >= revisions[-1])
            time.sleep(0.1)
    matches = lambda k, v: k == key  # noqa: E731
    expected = [(v.revision, v.kv and v.kv.value) for v in object_history(repo, "prod", matches, None).versions]
    assert [revision for revision, _ in expected] == revisions[::len(revisions) // 5][:5]

    fetch_base = history.verify_backup
    passes = packed_before_each_call(monkeypatch, history, "verify_backup", repo)  # while the base downloads
    with caplog.at_level("WARNING", logger="lifeboat.pitr.history"):
        found = [(v.revision, v.kv and v.kv.value) for v in object_history(repo, "prod", matches, None).versions]
    assert passes[0].packs >= 1 and passes[1].deleted >= 2, passes
    assert found == expected and "packed and deleted since it was listed" in caplog.text

    # A listed segment deleted with nothing in its place is missing: refused, never skipped.
    window = next(w for w in cluster_timeline(repo, "prod").windows if w.segments)
    assert window.chain is not None
    gone = segment_key("prod", window.chain.info.chain, window.segments[-1].name)
    monkeypatch.setattr(history, "verify_backup", lambda *a, **kw: (repo.store.delete(gone), fetch_base(*a, **kw))[1])
    with pytest.raises(IntegrityError, match="is missing"):
        object_history(repo, "prod", matches, None)


@pytest.mark.parametrize("damage", ["a flipped byte in its records", "a flipped byte in its header",
                                    "a flipped byte in its zstd frame header", "cut short"])
def test_a_damaged_pack_is_read_from_the_segments_it_holds_while_they_are_kept(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, cli: Cli, damage: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """A pack damaged when written (``lifeboat pack`` then keeps what it holds, for ever) or
    within ``pack-delete-after`` blocked every point, time and history it covered, though the
    segments it packed were whole beside it."""
    repo = open_repository(tmp_path / "repo")
    key = b"/registry/configmaps/default/settings"
    revisions: list[int] = []
    with capture_started(client, repo, capture_options("prod", etcd.client_url, tmp_path / "spool",
                                                       flush_interval=0.05)) as status:
        for round_ in range(5):
            revisions.append(client.put(key, f"v{round_}".encode()))
            revisions += write_history(client, 1, tag=f"r{round_}").revisions
            wait_for(lambda: status.last_revision >= revisions[-1])
            time.sleep(0.1)
    matches = lambda k, v: k == key  # noqa: E731
    versions = [v.revision for v in object_history(repo, "prod", matches, None).versions]
    flags = ("--repo", str(tmp_path / "repo"), "--cluster", "prod", "--min-age", "0")
    assert cli.json("pack", *flags)["packs"] == 1  # what it holds stays: the pack is not 30 minutes old
    window = next(w for w in cluster_timeline(repo, "prod").windows if w.segments)
    pack = window.segments[0]
    assert window.chain is not None and pack.last_revision > revisions[len(revisions) // 2] \
        and len(window.chain.segments) > len(window.segments) + 2
    middle = pack.first_seen + (pack.last_seen - pack.first_seen) / 2
    at_middle = find_point(repo, "prod", PointTarget(moment=middle), None).revision

    stored = tmp_path / "repo" / segment_key("prod", window.chain.info.chain, pack.name)
    first_end = checksummed_frame_end(stored.read_bytes())
    assert first_end is not None
    if damage == "cut short":
        os.truncate(stored, stored.stat().st_size - 100)
    elif "zstd" in damage:  # read first: the restore ended with BufferError (exit 4)
        flip_byte(stored, 2)
    else:
        flip_byte(stored, (first_end + stored.stat().st_size) // 2 if "records" in damage else first_end // 2)
    with pytest.raises(IntegrityError, match=re.escape(pack.name)):
        repo.chain_store.read_segment("prod", window.chain.info.chain, pack, None)

    with caplog.at_level("WARNING", logger="lifeboat.pitr"):
        for revision in sorted({revisions[1], revisions[len(revisions) // 2], revisions[-1]}):
            built = build_point_snapshot(repo, find_point(repo, "prod", PointTarget(revision=revision), None), None,
                                         tmp_path / f"at-{revision}.db")
            assert restored_state(built.path) == source_state(client, revision), f"state differs at {revision}"
            assert pack not in built.point.segments
        point = find_point(repo, "prod", PointTarget(moment=middle), None)
        assert point.revision == at_middle and pack not in point.segments
        assert [v.revision for v in object_history(repo, "prod", matches, None).versions] == versions
    assert f"capture segment {stored.as_uri()}" in caplog.text or pack.name in caplog.text
    assert "the other segments that hold its revisions" in caplog.text

    # `lifeboat pack` keeps them (it reads a pack back before deleting what it holds).
    code, _, err = cli("pack", *flags, "--delete-after", "0")
    assert code == 1 and f"segments held by {pack.name} are kept" in err, err
    assert [r.name for r in repo.chain_store.chains("prod")[0].segments] == [r.name for r in window.chain.segments]
    # Without them, the damaged pack is all there is: refused, never skipped.
    held = [ref for ref in window.chain.segments if ref not in window.segments]
    repo.chain_store.delete_segments("prod", window.chain.info.chain, held)
    named = f"{re.escape(pack.name)}|capture segment {pack.first_revision}\\.\\.{pack.last_revision} of chain"
    with pytest.raises(IntegrityError, match=named):
        build_point_snapshot(repo, find_point(repo, "prod", PointTarget(revision=revisions[-1]), None), None,
                             tmp_path / "refused.db")
    assert not (tmp_path / "refused.db").exists()

"""Shorthand for manifests, segments and chains in capture and timeline tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lifeboat.catalog.chains import ChainInfo, ChainListing, Gap, Heartbeat, SegmentRef
from lifeboat.catalog.manifest import BackupObject, BackupStatus, Manifest, SnapshotInfo, SourceMember
from lifeboat.catalog.segments import CapturedRevision, Predecessor, Segment
from lifeboat.etcdapi.model import EventType, KeyValue, WatchEvent

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def manifest(backup_id: str, revision: int, seconds: float, cluster_id: str = "c1") -> Manifest:
    moment = at(seconds).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return Manifest(
        id=backup_id, cluster="prod", status=BackupStatus.COMPLETE, started_at=moment, finished_at=moment,
        tool_version="test", source=SourceMember(member_id="1", name="m0", endpoint="http://127.0.0.1:2379", etcd_version="3.5.1",
                            cluster_id=cluster_id, raft_term=2, raft_index=9, is_leader=True),
        snapshot=SnapshotInfo(revision=revision, hash=0, total_key=10, total_size=4096, db_sha256="0" * 64), compression="zstd:1", encryption=None,
        recipients=(), objects=(BackupObject(name="snapshot.db.zst", size=1, sha256="1" * 64, raw_size=1,
                                             raw_sha256="2" * 64),),
    )


def ref(first: int, last: int, seen_first: float, seen_last: float) -> SegmentRef:
    return SegmentRef(first, last, at(seen_first), at(seen_last), f"{first:020d}-{last:020d}.x")


def chain(base: Manifest, segments: list[SegmentRef], *, gap: str | None = None,
          beat: tuple[int, float] | None = None, base_revision: int | None = None) -> ChainListing:
    assert base.snapshot is not None
    info = ChainInfo(base.id, "prod", base.id, base_revision or base.snapshot.revision, "c1", base.finished_at)
    last = segments[-1].last_revision if segments else info.base_revision
    return ChainListing(info, tuple(segments), Gap(gap, last, at(999)) if gap else None,
                        Heartbeat(beat[0], at(beat[1])) if beat else None)


def put(key: bytes, value: bytes, create: int, mod: int, version: int, lease: int = 0) -> WatchEvent:
    return WatchEvent(EventType.PUT, KeyValue(key, value, create, mod, version, lease))


def delete(key: bytes, mod: int) -> WatchEvent:
    return WatchEvent(EventType.DELETE, KeyValue(key, b"", 0, mod, 0))


def segment(previous: Predecessor, *revisions: tuple[int, float, list[WatchEvent]],
            leases: dict[int, int] | None = None) -> Segment:
    return Segment("prod", "20261201T030000Z-aaaaaa", previous,
                   tuple(CapturedRevision(r, at(s), tuple(events)) for r, s, events in revisions),
                   leases or {})

"""Immutable values read from etcd (live or from a snapshot); importable without grpc or protobuf."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(frozen=True)
class KeyValue:
    """One key at one revision, as etcd's MVCC store holds it."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True)
class RangePage:
    """One answer to a Range: the keys, whether the limit cut it short, the store revision."""

    kvs: tuple[KeyValue, ...]
    more: bool
    count: int
    revision: int


class EventType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True)
class WatchEvent:
    """A change seen by a watcher. A DELETE carries the key and the deleting revision only.

    ``kv_bytes``: a PUT's ``mvccpb.KeyValue`` bytes as the watch delivered them, when kept.
    They are the bytes etcd stored for the put (its MVCC row value), so capture writes them
    as they are instead of encoding ``kv`` again.
    """

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None
    kv_bytes: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ReceivedEvents:
    """The events of one watch response and when it arrived (Unix time, seconds).

    ``written_after``, when known, is a time before which none of these revisions existed: a
    feed that reads in passes knows each pass's revisions came after the previous pass began
    (see :class:`lifeboat.etcd.watch.LaggingFeed`). None: only that they existed on arrival.
    """

    received: float
    events: tuple[WatchEvent, ...]
    written_after: float | None = None


@dataclass(frozen=True)
class Member:
    """A cluster member as MemberList reports it. ``name`` is empty until it first started."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool


@dataclass(frozen=True)
class MemberList:
    """The members of a cluster and the cluster's id, as one member answered."""

    cluster_id: int
    members: tuple[Member, ...]
    answered_by: int


@dataclass(frozen=True)
class MemberStatus:
    """What one member says about itself (Maintenance.Status)."""

    endpoint: str
    member_id: int
    cluster_id: int
    version: str
    db_size: int
    db_size_in_use: int
    leader_id: int
    raft_index: int
    raft_term: int
    raft_applied_index: int
    is_learner: bool
    errors: tuple[str, ...]
    revision: int

    @property
    def is_leader(self) -> bool:
        return self.member_id == self.leader_id and self.leader_id != 0


@dataclass(frozen=True)
class HashKV:
    """A member's hash of its MVCC keys up to ``revision``; equal across healthy members."""

    hash: int
    compact_revision: int
    revision: int
    member_id: int


class AlarmType(enum.Enum):
    NOSPACE = "NOSPACE"
    CORRUPT = "CORRUPT"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class Alarm:
    """A raised cluster alarm (e.g. NOSPACE once the backend quota is exhausted)."""

    member_id: int
    type: AlarmType


@dataclass(frozen=True)
class LeaseTimeToLive:
    """A lease's remaining seconds (-1 once expired or unknown) and its granted TTL."""

    id: int
    ttl: int
    granted_ttl: int
    keys: tuple[bytes, ...]

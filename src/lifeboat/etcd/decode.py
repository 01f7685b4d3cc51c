"""protobuf answers from etcd turned into lifeboat's immutable values."""

from __future__ import annotations

from typing import Any

from lifeboat.etcdapi.model import (
    Alarm,
    AlarmType,
    EventType,
    KeyValue,
    Member,
    MemberStatus,
    RangePage,
    WatchEvent,
)
from lifeboat.etcdapi.proto import kv_pb2, rpc_pb2


def key_value(kv: kv_pb2.KeyValue) -> KeyValue:
    return KeyValue(
        key=kv.key, value=kv.value, create_revision=kv.create_revision,
        mod_revision=kv.mod_revision, version=kv.version, lease=kv.lease,
    )


def range_page(response: rpc_pb2.RangeResponse) -> RangePage:
    return RangePage(
        kvs=tuple(key_value(kv) for kv in response.kvs), more=response.more,
        count=response.count, revision=response.header.revision,
    )


def member(m: rpc_pb2.Member) -> Member:
    return Member(
        id=m.ID, name=m.name, peer_urls=tuple(m.peerURLs), client_urls=tuple(m.clientURLs),
        is_learner=m.isLearner,
    )


def member_status(endpoint: str, r: rpc_pb2.StatusResponse) -> MemberStatus:
    return MemberStatus(
        endpoint=endpoint, member_id=r.header.member_id, cluster_id=r.header.cluster_id,
        version=r.version, db_size=r.dbSize, db_size_in_use=r.dbSizeInUse, leader_id=r.leader,
        raft_index=r.raftIndex, raft_term=r.raftTerm, raft_applied_index=r.raftAppliedIndex,
        is_learner=r.isLearner, errors=tuple(r.errors), revision=r.header.revision,
    )


_ALARMS = {rpc_pb2.NOSPACE: AlarmType.NOSPACE, rpc_pb2.CORRUPT: AlarmType.CORRUPT}


def alarm(a: rpc_pb2.AlarmMember) -> Alarm:
    return Alarm(member_id=a.memberID, type=_ALARMS.get(a.alarm, AlarmType.UNKNOWN))


def watch_event(event: Any) -> WatchEvent:
    kind = EventType.DELETE if event.type == kv_pb2.Event.DELETE else EventType.PUT
    prev = key_value(event.prev_kv) if event.HasField("prev_kv") else None
    # A put's KeyValue is the message etcd stored as its MVCC row (server/mvcc/kvstore_txn.go
    # put), fields in number order, zero ones left out, as protobuf serializes it again here:
    # capture stores these bytes instead of encoding the event field by field in Python.
    kv_bytes = event.kv.SerializeToString() if kind is EventType.PUT else None
    return WatchEvent(type=kind, kv=key_value(event.kv), prev_kv=prev, kv_bytes=kv_bytes)

"""Talking to a live etcd over gRPC: connection settings, the client, the values it returns (from :mod:`lifeboat.etcdapi`)."""

import os

# grpc-core logs every failed TLS handshake to stderr; the errors we raise already say
# what failed. This must happen before grpc is first imported; a user's own
# GRPC_VERBOSITY wins.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from lifeboat.etcd.client import EtcdClient
from lifeboat.etcd.failures import RevisionCompacted
from lifeboat.etcdapi.model import (
    Alarm,
    AlarmType,
    EventType,
    HashKV,
    KeyValue,
    Member,
    MemberList,
    MemberStatus,
    RangePage,
    WatchEvent,
)
from lifeboat.etcd.settings import ConnectionSettings, TlsConfig
from lifeboat.etcd.txn import Compare, Delete, Get, Put, Target, TxnResult
from lifeboat.etcd.watch import WatchStream

__all__ = [
    "Alarm", "AlarmType", "Compare", "ConnectionSettings", "Delete", "EtcdClient", "EventType",
    "Get", "HashKV", "KeyValue", "Member", "MemberList", "MemberStatus", "Put", "RangePage",
    "RevisionCompacted", "Target", "TlsConfig", "TxnResult", "WatchEvent", "WatchStream",
]

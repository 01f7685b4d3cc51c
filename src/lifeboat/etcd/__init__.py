"""Talking to etcd: a live cluster over gRPC, and etcd's own binaries on this host.

* :mod:`~lifeboat.etcd.client` — the gRPC client (connection settings, failover, errors);
  the values it returns come from :mod:`lifeboat.etcdapi`.
* :mod:`~lifeboat.etcd.certificates` — why a certificate is refused (its dates), checked on
  the files given and, after a failed verification, on etcd's own.
* :mod:`~lifeboat.etcd.seam` — the :class:`~lifeboat.etcd.seam.Etcd` protocol code depends on;
  :mod:`~lifeboat.etcd.memory` is its in-memory double for unit tests.
* :mod:`~lifeboat.etcd.binaries` — finding etcd, etcdutl and etcdctl, running a snapshot restore;
  :mod:`~lifeboat.etcd.local` — one local member process (drills, the demo);
  :mod:`~lifeboat.etcd.data_dir` — whether a running etcd holds a data dir.
"""

import os

# grpc-core logs every failed TLS handshake to stderr; the errors we raise already say
# what failed. This must happen before grpc is first imported; a user's own
# GRPC_VERBOSITY wins.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from lifeboat.etcd.client import EtcdClient
from lifeboat.etcd.failures import RevisionCompacted
from lifeboat.etcdapi.model import Alarm, AlarmType, EventType, HashKV, KeyValue, Member, MemberList
from lifeboat.etcdapi.model import MemberStatus, RangePage, WatchEvent
from lifeboat.etcd.settings import ConnectionSettings, TlsConfig
from lifeboat.etcd.txn import Compare, Delete, Get, Put, Target, TxnResult
from lifeboat.etcd.watch import WatchStream

__all__ = [
    "Alarm", "AlarmType", "Compare", "ConnectionSettings", "Delete", "EtcdClient", "EventType",
    "Get", "HashKV", "KeyValue", "Member", "MemberList", "MemberStatus", "Put", "RangePage",
    "RevisionCompacted", "Target", "TlsConfig", "TxnResult", "WatchEvent", "WatchStream",
]

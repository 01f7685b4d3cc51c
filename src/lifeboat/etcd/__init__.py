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
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

os.environ.setdefault("GRPC_VERBOSITY", "NONE")

# grpcio releases measured with gRPC's classic poller (below). grpc reads GRPC_EXPERIMENTS once,
# when it is first imported, and prints an error for a name it does not know (even with
# GRPC_VERBOSITY=NONE): a release not listed here keeps its default.
CLASSIC_POLLER_RELEASES = ("1.85.",)
CLASSIC_POLLER = "-event_engine_client"


def _prefer_classic_poller() -> None:
    """Read gRPC streams on the thread that iterates them, unless the user chose experiments.

    With its EventEngine client, grpc reads every stream in threads of its own and wakes the
    reading thread for each message: a 1.2 GB snapshot (38,000 messages of 32 KiB) cost 4-5 s
    more CPU, most of it in the kernel switching threads, than with the classic poller, where
    a single-threaded stream is read by the thread that iterates it (grpcio 1.85.3, 2026-12-01).
    """
    if "GRPC_EXPERIMENTS" in os.environ:
        return
    try:
        release = version("grpcio")
    except PackageNotFoundError:
        return
    if release.startswith(CLASSIC_POLLER_RELEASES):
        os.environ["GRPC_EXPERIMENTS"] = CLASSIC_POLLER


_prefer_classic_poller()

if TYPE_CHECKING:
    from lifeboat.etcd.client import EtcdClient
    from lifeboat.etcd.failures import RevisionCompacted
    from lifeboat.etcdapi.model import Alarm, AlarmType, EventType, HashKV, KeyValue, Member, MemberList
    from lifeboat.etcdapi.model import MemberStatus, RangePage, WatchEvent
    from lifeboat.etcd.settings import ConnectionSettings, TlsConfig
    from lifeboat.etcd.txn import Compare, Delete, Get, Put, Target, TxnResult
    from lifeboat.etcd.watch import WatchStream

# The module each name comes from, imported when the name is first used: a command that only
# reads a repository (list, show) starts without grpc and etcd's protobuf messages.
_HOMES = {
    "EtcdClient": "lifeboat.etcd.client", "RevisionCompacted": "lifeboat.etcd.failures",
    **dict.fromkeys(("Alarm", "AlarmType", "EventType", "HashKV", "KeyValue", "Member", "MemberList",
                     "MemberStatus", "RangePage", "WatchEvent"), "lifeboat.etcdapi.model"),
    "ConnectionSettings": "lifeboat.etcd.settings", "TlsConfig": "lifeboat.etcd.settings",
    **dict.fromkeys(("Compare", "Delete", "Get", "Put", "Target", "TxnResult"), "lifeboat.etcd.txn"),
    "WatchStream": "lifeboat.etcd.watch",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value

__all__ = [
    "Alarm", "AlarmType", "Compare", "ConnectionSettings", "Delete", "EtcdClient", "EventType",
    "Get", "HashKV", "KeyValue", "Member", "MemberList", "MemberStatus", "Put", "RangePage",
    "RevisionCompacted", "Target", "TlsConfig", "TxnResult", "WatchEvent", "WatchStream",
]

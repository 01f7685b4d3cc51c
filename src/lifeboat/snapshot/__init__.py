"""Reading an etcd snapshot file offline: status, integrity and contents, in pure Python."""

from __future__ import annotations

from .mvcc import (
    KeyValue,
    SnapshotMeta,
    cluster_id_from_members,
    iter_latest,
    read_members,
    read_meta,
)
from .page_scan import PageScan
from .status import SnapshotStatus, snapshot_status
from .trailer import TrailerCheck, check_trailer

__all__ = [
    "KeyValue",
    "PageScan",
    "SnapshotMeta",
    "SnapshotStatus",
    "TrailerCheck",
    "check_trailer",
    "cluster_id_from_members",
    "iter_latest",
    "read_members",
    "read_meta",
    "snapshot_status",
]

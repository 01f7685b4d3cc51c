"""Where stored Kubernetes objects are read from: a snapshot file or a running etcd.

A backup in a repository becomes a snapshot file first (the CLI fetches it with
``verify``, a layer above this one) and is then read like any other file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lifeboat.errors import UsageError
from lifeboat.etcd import EtcdClient
from lifeboat.snapshot import cluster_id_from_members, iter_latest, read_members

REGISTRY_PREFIX = b"/registry/"


class StoredKeyValue(Protocol):
    """One key as etcd holds it; both the snapshot reader's and the etcd client's fit."""

    @property
    def key(self) -> bytes: ...
    @property
    def value(self) -> bytes: ...
    @property
    def create_revision(self) -> int: ...
    @property
    def mod_revision(self) -> int: ...
    @property
    def lease(self) -> int: ...


@dataclass(frozen=True)
class ClusterIdentity:
    """What a source says about which etcd cluster it came from."""

    cluster_id: int | None
    member_ids: frozenset[int] = field(default_factory=frozenset)

    def describe(self) -> str:
        if self.cluster_id is not None:
            return f"cluster {self.cluster_id:x}"
        if self.member_ids:
            return "members " + ", ".join(f"{m:x}" for m in sorted(self.member_ids))
        return "an unknown cluster"


def same_cluster(source: ClusterIdentity, live: ClusterIdentity) -> bool:
    """Whether ``source`` was taken from the ``live`` cluster, as far as can be told.

    A recorded cluster id decides. A snapshot file records only its members: it matches
    when their derived id is the live cluster's or when a member id is shared (member ids
    hash peer URLs, the cluster token and, for added members, the time they were added).
    """
    if source.cluster_id is not None:
        return source.cluster_id == live.cluster_id
    if not source.member_ids:
        return False
    if cluster_id_from_members(source.member_ids) == live.cluster_id:
        return True
    return bool(source.member_ids & live.member_ids)


class ObjectSource(Protocol):
    """Somewhere to read the keys under ``/registry/`` from, at one revision."""

    @property
    def description(self) -> str: ...

    def key_values(self, prefix: bytes = REGISTRY_PREFIX) -> Iterator[StoredKeyValue]:
        """The live keys under ``prefix``, sorted by key."""
        ...

    def identity(self) -> ClusterIdentity: ...

    def revision(self) -> int | None:
        """The store revision the keys were read at, when known."""
        ...


class SnapshotFileSource:
    """An etcd snapshot file, read offline."""

    def __init__(self, path: Path, *, description: str | None = None,
                 cluster_id: int | None = None, revision: int | None = None) -> None:
        if not path.is_file():
            raise UsageError(f"snapshot file {path} does not exist or is not a file")
        self.path = path
        self.description = description or f"snapshot file {path}"
        self._cluster_id = cluster_id
        self._revision = revision

    def key_values(self, prefix: bytes = REGISTRY_PREFIX) -> Iterator[StoredKeyValue]:
        yield from iter_latest(self.path, prefix)

    def identity(self) -> ClusterIdentity:
        members, _removed = read_members(self.path)
        return ClusterIdentity(self._cluster_id, frozenset(m.id for m in members))

    def revision(self) -> int | None:
        return self._revision


class LiveEtcdSource:
    """A running etcd; every read of one source is pinned to the revision of its first."""

    def __init__(self, client: EtcdClient, endpoints: str = "") -> None:
        self.client = client
        self.description = f"live etcd {endpoints}".rstrip()
        self._revision: int | None = None

    def key_values(self, prefix: bytes = REGISTRY_PREFIX) -> Iterator[StoredKeyValue]:
        pages = self.client.range_pages(prefix, prefix=True, revision=self._revision or 0)
        for page in pages:
            self._revision = self._revision or page.revision
            yield from page.kvs

    def identity(self) -> ClusterIdentity:
        members = self.client.member_list()
        return ClusterIdentity(members.cluster_id, frozenset(m.id for m in members.members))

    def revision(self) -> int | None:
        return self._revision

"""The raft files of a freshly restored etcd member, written and read without etcd's tools.

What ``etcdutl snapshot restore`` (3.5) and ``etcdctl snapshot restore`` (3.4) write beside the
db, as read in etcd's restore code (etcdutl/snapshot/v3_snapshot.go, clientv3/snapshot for
3.4) and its wal, snap and membership packages; checked byte for byte against etcdutl 3.5.1's
and etcdctl 3.4.23's output by the tests:

* member ids and the cluster id: sha1 of the member's sorted peer URLs joined, then the
  cluster token (``computeMemberId``); the cluster id is the sha1 of every member id, sorted,
  as 8 big-endian bytes each (``genID``). Both are the first 8 bytes of the digest, big-endian.
* ``member/wal/0000000000000000-0000000000000000.wal``: records of a length field (8 bytes,
  little-endian; the top byte is ``0x80 | padding`` when the record is padded to 8 bytes) and a
  ``walpb.Record`` (type, crc, data). The crc chains: crc32c over each record's data, starting
  from the previous crc. The records: crc (0), metadata (node id, cluster id), an empty
  snapshot, one conf change per member adding it (term 1, index 1..n, members by id), the hard
  state (term 1, vote: the first member, commit n) and the snapshot at (n, 1) — with its
  conf state from 3.5 on. The segment is preallocated to 64,000,000 bytes.
* ``member/snap/<term>-<index>.snap``: ``snappb.Snapshot`` (crc32c of the data, data) of a
  ``raftpb.Snapshot`` at (n, 1) whose data is the v2 store as JSON, holding each member's
  raft attributes under ``/0/members/<id>``.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import google_crc32c

from lifeboat.config.rules import ETCD_URL_CREDENTIALS, holds_credentials
from lifeboat.errors import UsageError
from lifeboat.etcdapi.wire import LENGTH_DELIMITED, VARINT, MalformedValue, read_varint, write_varint
from lifeboat.snapshot import cluster_id_from_members

WAL_NAME = "0000000000000000-0000000000000000.wal"
RAFT_TERM = 1  # the restore's raft log starts at term 1

# walpb record types (wal/wal.go)
METADATA_RECORD, ENTRY_RECORD, STATE_RECORD, CRC_RECORD, SNAPSHOT_RECORD = 1, 2, 3, 4, 5
_ENTRY_CONF_CHANGE = 1  # raftpb.EntryConfChange
_CONF_CHANGE_ADD_NODE = 0  # raftpb.ConfChangeAddNode
_LENGTH_FIELD = struct.Struct("<Q")
_EVENT_HISTORY = 1000  # v2store's event history capacity (etcdserver: newStore(…, 1000))


@dataclass(frozen=True)
class NewMember:
    """A member of the restored cluster, as etcd's membership package makes it."""

    id: int
    name: str
    peer_urls: tuple[str, ...]  # sorted, as etcd keeps them

    @property
    def key(self) -> bytes:
        """Its key in bucket ``members`` and under ``/0/members``: the id in hex (types.ID)."""
        return format(self.id, "x").encode()

    def json(self) -> bytes:
        """``membership.Member`` as etcd marshals it (conf change context, bucket ``members``)."""
        return _go_json({"id": self.id, "peerURLs": list(self.peer_urls), "name": self.name})

    def raft_attributes(self) -> bytes:
        return _go_json({"peerURLs": list(self.peer_urls)})


@dataclass(frozen=True)
class NewCluster:
    """The members of a restored cluster (by id, as etcd orders them) and its id."""

    members: tuple[NewMember, ...]
    id: int

    def member(self, name: str) -> NewMember:
        for member in self.members:
            if member.name == name:
                return member
        raise UsageError(f"--initial-cluster has no member named {name!r}")

    @property
    def commit(self) -> int:
        """The raft index the restore's log ends at: one conf change per member."""
        return len(self.members)


def peer_url(url: str) -> str:
    """``url`` as etcd's ``types.NewURLs`` keeps it; UsageError for one etcd would refuse."""
    if holds_credentials(url):
        raise UsageError(f"a peer URL {ETCD_URL_CREDENTIALS}")
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # a ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        parts, port = urlsplit(""), None
    scheme = parts.scheme.lower()
    if (scheme not in ("http", "https") or not parts.hostname or port is None or parts.path
            or parts.query or parts.fragment or "@" in parts.netloc):
        raise UsageError(f"peer URL {url!r} is not like https://10.0.0.1:2380 (scheme, host and port only)")
    return f"{scheme}://{parts.netloc}"


def member_id(peer_urls: Sequence[str], token: str) -> int:
    """etcd's id for a member with ``peer_urls`` in a cluster made with ``token``."""
    joined = "".join(sorted(peer_url(u) for u in peer_urls)) + token
    return int.from_bytes(hashlib.sha1(joined.encode()).digest()[:8], "big")


def new_cluster(members: Sequence[tuple[str, Sequence[str]]], token: str) -> NewCluster:
    """The cluster ``--initial-cluster`` (name, peer URLs per member) and ``token`` make."""
    made = sorted((NewMember(member_id(urls, token), name, tuple(sorted(peer_url(u) for u in urls)))
                   for name, urls in members), key=lambda m: m.id)
    if len({m.id for m in made}) != len(made):
        raise UsageError("two members of --initial-cluster have the same peer URLs")
    return NewCluster(tuple(made), cluster_id_from_members(m.id for m in made))


# -- protobuf, field by field as etcd's generated (gogoproto) marshallers write them -------------


def _uint(number: int, value: int) -> bytes:
    return write_varint(number << 3 | VARINT) + write_varint(value)


def _bytes(number: int, data: bytes) -> bytes:
    return write_varint(number << 3 | LENGTH_DELIMITED) + write_varint(len(data)) + data


def _conf_state(voters: Sequence[int]) -> bytes:
    """``raftpb.ConfState``: the voters, and auto_leave (false; not nullable, so written)."""
    return b"".join(_uint(1, voter) for voter in voters) + _uint(5, 0)


def _conf_change_entry(index: int, member: NewMember) -> bytes:
    change = _uint(1, 0) + _uint(2, _CONF_CHANGE_ADD_NODE) + _uint(3, member.id) + _bytes(4, member.json())
    return _uint(1, _ENTRY_CONF_CHANGE) + _uint(2, RAFT_TERM) + _uint(3, index) + _bytes(4, change)


def _record(kind: int, crc: int, data: bytes | None) -> bytes:
    body = _uint(1, kind) + _uint(2, crc) + (b"" if data is None else _bytes(3, data))
    padding = -len(body) % 8
    length = len(body) | ((0x80 | padding) << 56 if padding else 0)
    return _LENGTH_FIELD.pack(length) + body + bytes(padding)


def wal_records(cluster: NewCluster, node: NewMember, *, conf_state_in_snapshot: bool) -> bytes:
    """The records of the restored member's first WAL segment (before its preallocated zeros).

    ``conf_state_in_snapshot``: etcd 3.5+ records the conf state in the WAL's snapshot record
    (``walpb.Snapshot.conf_state``); 3.4's has none.
    """
    voters = [m.id for m in cluster.members]
    commit = cluster.commit
    snapshot = _uint(1, commit) + _uint(2, RAFT_TERM)
    if conf_state_in_snapshot:
        snapshot += _bytes(3, _conf_state(voters))
    payloads = [
        (METADATA_RECORD, _uint(1, node.id) + _uint(2, cluster.id)),
        (SNAPSHOT_RECORD, _uint(1, 0) + _uint(2, 0)),
        *((ENTRY_RECORD, _conf_change_entry(i, m)) for i, m in enumerate(cluster.members, 1)),
        (STATE_RECORD, _uint(1, RAFT_TERM) + _uint(2, voters[0]) + _uint(3, commit)),
        (SNAPSHOT_RECORD, snapshot),
    ]
    crc = 0
    out = [_record(CRC_RECORD, crc, None)]
    for kind, data in payloads:
        crc = google_crc32c.extend(crc, data)
        out.append(_record(kind, crc, data))
    return b"".join(out)


def snap_file_name(cluster: NewCluster) -> str:
    return f"{RAFT_TERM:016x}-{cluster.commit:016x}.snap"


def snap_file(cluster: NewCluster) -> bytes:
    """The ``.snap`` file: the raft snapshot at (commit, term 1) holding the v2 store."""
    metadata = _bytes(1, _conf_state([m.id for m in cluster.members])) + _uint(2, cluster.commit) + _uint(3, RAFT_TERM)
    data = _bytes(1, v2_store(cluster)) + _bytes(2, metadata)
    return _uint(1, google_crc32c.value(data)) + _bytes(2, data)


# -- the v2 store (etcd's v2store.store as encoding/json writes it) -----------------------------


def _go_json(value: Any) -> bytes:
    """``value`` as Go's encoding/json writes it: no spaces, ``<>&`` and U+2028/9 escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text.encode()


def _node(path: str, index: int, value: str = "", children: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"Path": path, "CreatedIndex": index, "ModifiedIndex": index, "ExpireTime": "0001-01-01T00:00:00Z",
            "Value": value, "Children": children}


def v2_store(cluster: NewCluster) -> bytes:
    """The v2 store after the restore added each member (by id) to a new store, as JSON."""
    members: dict[str, Any] = {}
    events: list[Any] = []
    for index, member in enumerate(cluster.members, 1):
        key = member.key.decode()
        path = f"/0/members/{key}"
        attributes = member.raft_attributes().decode()
        members[key] = _node(path, index, children={
            "raftAttributes": _node(f"{path}/raftAttributes", index, attributes)})
        events.append({"action": "create", "node": {"key": f"{path}/raftAttributes", "value": attributes,
                                                    "modifiedIndex": index, "createdIndex": index}})
    count = len(events)
    if count >= _EVENT_HISTORY:
        raise UsageError(f"{count} members: more than etcd's v2 store records; restore with --restore-with tool")
    root = _node("/", 0, children={
        # Go's encoding/json writes a map's keys sorted as strings: an id of 15 hex digits
        # (a leading zero nibble) sorts by its digits, not by its value.
        "0": _node("/0", 0, children={"members": _node("/0/members", 1, children=dict(sorted(members.items())))}),
        "1": _node("/1", 0, children={}),
    })
    stats = dict.fromkeys(("getsSuccess", "getsFail", "setsSuccess", "setsFail", "deleteSuccess", "deleteFail",
                           "updateSuccess", "updateFail", "createSuccess", "createFail",
                           "compareAndSwapSuccess", "compareAndSwapFail", "compareAndDeleteSuccess",
                           "compareAndDeleteFail", "expireCount", "watchers"), 0)
    stats["createSuccess"] = count
    history = {"Queue": {"Events": events + [None] * (_EVENT_HISTORY - count), "Size": count, "Front": 0,
                         "Back": count, "Capacity": _EVENT_HISTORY},
               "StartIndex": 1, "LastIndex": count}
    return _go_json({"Root": root, "WatcherHub": {"EventHistory": history}, "CurrentIndex": count,
                     "Stats": stats, "CurrentVersion": 2})


# -- reading them back ------------------------------------------------------------------------


@dataclass(frozen=True)
class WalRecord:
    offset: int
    kind: int
    crc: int
    data: bytes


def read_wal_records(segment: bytes) -> Iterator[WalRecord]:
    """The records of a WAL segment up to its zero fill; MalformedValue on a broken crc chain."""
    pos, crc = 0, 0
    while pos + 8 <= len(segment):
        (field,) = _LENGTH_FIELD.unpack_from(segment, pos)
        if field == 0:
            return
        length, padding = field & ((1 << 56) - 1), (field >> 56) & 0x7 if field >> 63 else 0
        end = pos + 8 + length
        if end + padding > len(segment):
            raise MalformedValue(f"WAL record at byte {pos} runs past the segment")
        fields = dict(_fields(segment[pos + 8 : end]))
        kind, stored, data = int(fields.get(1, 0)), int(fields.get(2, 0)), bytes(fields.get(3, b""))
        if kind != CRC_RECORD:
            crc = google_crc32c.extend(crc, data)
        elif stored != crc:
            raise MalformedValue(f"WAL crc record at byte {pos} carries {stored:#x}, the chain is at {crc:#x}")
        if stored != crc:
            raise MalformedValue(f"WAL record at byte {pos}: crc {stored:#x}, its data chains to {crc:#x}")
        if any(segment[end : end + padding]):
            raise MalformedValue(f"WAL record at byte {pos}: padding is not zero")
        yield WalRecord(pos, kind, stored, data)
        pos = end + padding


def read_snap_file(data: bytes) -> bytes:
    """The raft snapshot (``raftpb.Snapshot`` bytes) a ``.snap`` file holds; MalformedValue on a bad crc."""
    fields = dict(_fields(data))
    inner = bytes(fields.get(2, b""))
    if fields.get(1) != google_crc32c.value(inner):
        raise MalformedValue("the .snap file's crc does not match its data")
    return inner


def fields_of(message: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of a protobuf message of varint and bytes fields, in order."""
    return list(_fields(message))


def _fields(message: bytes) -> Iterator[tuple[int, int | bytes]]:
    pos = 0
    while pos < len(message):
        tag, pos = read_varint(message, pos)
        if tag & 7 == VARINT:
            value, pos = read_varint(message, pos)
            yield tag >> 3, value
        elif tag & 7 == LENGTH_DELIMITED:
            size, pos = read_varint(message, pos)
            if pos + size > len(message):
                raise MalformedValue(f"field {tag >> 3} runs past its message")
            yield tag >> 3, message[pos : pos + size]
            pos += size
        else:
            raise MalformedValue(f"field {tag >> 3} has wire type {tag & 7}, not varint or bytes")


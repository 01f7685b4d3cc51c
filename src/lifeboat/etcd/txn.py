"""A small typed API for etcd transactions: guards (``Compare``) and operations.

A transaction runs atomically at one revision: when every ``Compare`` holds, the
``success`` operations run, otherwise the ``failure`` ones.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from lifeboat.etcd.decode import range_page
from lifeboat.etcd.keys import Key, as_bytes
from lifeboat.etcdapi.model import RangePage
from lifeboat.etcdapi.proto import rpc_pb2


class Target(enum.Enum):
    """The field of a key a ``Compare`` looks at; a missing key has 0 / empty in each."""

    VERSION = rpc_pb2.Compare.VERSION
    CREATE_REVISION = rpc_pb2.Compare.CREATE
    MOD_REVISION = rpc_pb2.Compare.MOD
    VALUE = rpc_pb2.Compare.VALUE
    LEASE = rpc_pb2.Compare.LEASE


Operator = Literal["==", "!=", "<", ">"]

_RESULTS: dict[str, rpc_pb2.Compare.CompareResult.ValueType] = {
    "==": rpc_pb2.Compare.EQUAL,
    "!=": rpc_pb2.Compare.NOT_EQUAL,
    "<": rpc_pb2.Compare.LESS,
    ">": rpc_pb2.Compare.GREATER,
}


@dataclass(frozen=True)
class Compare:
    """``target(key) <op> operand``: bytes for VALUE, an int for every other target."""

    key: Key
    target: Target
    op: Operator
    operand: int | bytes

    def message(self) -> rpc_pb2.Compare:
        msg = rpc_pb2.Compare(result=_RESULTS[self.op], target=self.target.value, key=as_bytes(self.key))
        if self.target is Target.VALUE:
            if not isinstance(self.operand, bytes):
                raise TypeError("a VALUE compare needs a bytes operand")
            msg.value = self.operand
            return msg
        if not isinstance(self.operand, int):
            raise TypeError(f"a {self.target.name} compare needs an int operand")
        field = {
            Target.VERSION: "version", Target.CREATE_REVISION: "create_revision",
            Target.MOD_REVISION: "mod_revision", Target.LEASE: "lease",
        }[self.target]
        setattr(msg, field, self.operand)
        return msg


def key_absent(key: Key) -> Compare:
    """Holds when ``key`` does not exist (etcd reports create revision 0 for it)."""
    return Compare(key, Target.CREATE_REVISION, "==", 0)


def mod_revision_is(key: Key, revision: int) -> Compare:
    return Compare(key, Target.MOD_REVISION, "==", revision)


def value_is(key: Key, value: bytes) -> Compare:
    return Compare(key, Target.VALUE, "==", value)


@dataclass(frozen=True)
class Put:
    key: Key
    value: bytes
    lease: int = 0

    def message(self) -> rpc_pb2.RequestOp:
        return rpc_pb2.RequestOp(
            request_put=rpc_pb2.PutRequest(key=as_bytes(self.key), value=self.value, lease=self.lease)
        )


@dataclass(frozen=True)
class Delete:
    """Delete ``key``, or every key in ``[key, range_end)``."""

    key: Key
    range_end: Key | None = None

    def message(self) -> rpc_pb2.RequestOp:
        end = as_bytes(self.range_end) if self.range_end is not None else b""
        return rpc_pb2.RequestOp(
            request_delete_range=rpc_pb2.DeleteRangeRequest(key=as_bytes(self.key), range_end=end)
        )


@dataclass(frozen=True)
class Get:
    """Read ``key``, or the keys in ``[key, range_end)``, inside the transaction."""

    key: Key
    range_end: Key | None = None
    limit: int = 0
    keys_only: bool = False

    def message(self) -> rpc_pb2.RequestOp:
        end = as_bytes(self.range_end) if self.range_end is not None else b""
        return rpc_pb2.RequestOp(
            request_range=rpc_pb2.RangeRequest(
                key=as_bytes(self.key), range_end=end, limit=self.limit, keys_only=self.keys_only
            )
        )


Operation = Put | Delete | Get


@dataclass(frozen=True)
class Written:
    """A Put's outcome inside a transaction."""

    revision: int


@dataclass(frozen=True)
class Deleted:
    """A Delete's outcome inside a transaction."""

    count: int


@dataclass(frozen=True)
class TxnResult:
    """Which branch ran, the store revision after it, one outcome per operation of that branch."""

    succeeded: bool
    revision: int
    outcomes: tuple[Written | Deleted | RangePage, ...]


def request(
    compare: tuple[Compare, ...] | list[Compare],
    success: tuple[Operation, ...] | list[Operation],
    failure: tuple[Operation, ...] | list[Operation],
) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(
        compare=[c.message() for c in compare],
        success=[op.message() for op in success],
        failure=[op.message() for op in failure],
    )


def result(response: rpc_pb2.TxnResponse) -> TxnResult:
    revision = response.header.revision
    outcomes: list[Written | Deleted | RangePage] = []
    for op in response.responses:
        kind = op.WhichOneof("response")
        if kind == "response_put":
            outcomes.append(Written(revision))
        elif kind == "response_delete_range":
            outcomes.append(Deleted(op.response_delete_range.deleted))
        elif kind == "response_range":
            outcomes.append(range_page(op.response_range))
    return TxnResult(succeeded=response.succeeded, revision=revision, outcomes=tuple(outcomes))

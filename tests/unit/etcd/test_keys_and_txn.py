from __future__ import annotations

import pytest

from lifeboat.etcd.keys import prefix_end
from lifeboat.etcdapi.proto import rpc_pb2
from lifeboat.etcd.txn import Compare, Delete, Get, Put, Target, key_absent, request, result


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"/registry/", b"/registry0"), (b"a\xff", b"b"), (b"a\xff\xff", b"b"), (b"\xff", b"\0"), (b"", b"\0"), ("ab", b"ac")],
)
def test_prefix_end_follows_etcds_rule(prefix: bytes | str, end: bytes) -> None:
    assert prefix_end(prefix) == end


def test_put_if_absent_guard_compares_create_revision_with_zero() -> None:
    message = key_absent("/k").message()
    assert message.target == rpc_pb2.Compare.CREATE
    assert message.result == rpc_pb2.Compare.EQUAL
    assert message.WhichOneof("target_union") == "create_revision" and message.create_revision == 0
    assert message.key == b"/k"


def test_value_compare_sets_the_value_field_and_rejects_ints() -> None:
    message = Compare(b"k", Target.VALUE, "!=", b"v").message()
    assert message.WhichOneof("target_union") == "value" and message.result == rpc_pb2.Compare.NOT_EQUAL
    with pytest.raises(TypeError):
        Compare(b"k", Target.VALUE, "==", 3).message()
    with pytest.raises(TypeError):
        Compare(b"k", Target.MOD_REVISION, "<", b"3").message()


def test_request_carries_operations_in_order() -> None:
    built = request([], [Put("a", b"1", lease=7), Delete("p/", "p0"), Get("x", keys_only=True)], [Get("y")])
    kinds = [op.WhichOneof("request") for op in built.success]
    assert kinds == ["request_put", "request_delete_range", "request_range"]
    assert built.success[0].request_put.lease == 7
    assert built.success[1].request_delete_range.range_end == b"p0"
    assert built.success[2].request_range.keys_only
    assert built.failure[0].request_range.key == b"y"


def test_result_reports_one_outcome_per_operation() -> None:
    response = rpc_pb2.TxnResponse(
        header=rpc_pb2.ResponseHeader(revision=42),
        succeeded=True,
        responses=[
            rpc_pb2.ResponseOp(response_put=rpc_pb2.PutResponse()),
            rpc_pb2.ResponseOp(response_delete_range=rpc_pb2.DeleteRangeResponse(deleted=3)),
            rpc_pb2.ResponseOp(response_range=rpc_pb2.RangeResponse(count=0)),
        ],
    )
    outcome = result(response)
    assert outcome.succeeded and outcome.revision == 42
    assert [type(o).__name__ for o in outcome.outcomes] == ["Written", "Deleted", "RangePage"]
    assert outcome.outcomes[1].count == 3  # type: ignore[union-attr]

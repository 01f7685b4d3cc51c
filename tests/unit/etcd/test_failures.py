from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest

from lifeboat.errors import EtcdAuthError, EtcdUnavailable, NotFound, OperationFailed
from lifeboat.etcd.failures import Kind, RevisionCompacted, attempt, classify, exhausted, translate


@dataclass
class FakeRpcError(grpc.RpcError):  # type: ignore[misc]
    status: grpc.StatusCode
    text: str

    def code(self) -> grpc.StatusCode:
        return self.status

    def details(self) -> str:
        return self.text


WRONG_CA = FakeRpcError(
    grpc.StatusCode.UNAVAILABLE,
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:2379: Tls handshake "
    "failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:"
    "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate",
)
CLIENT_REFUSED_35 = FakeRpcError(
    grpc.StatusCode.UNAVAILABLE,
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:2379: Tls handshake "
    "failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:10000412:SSL routines:OPENSSL_internal:"
    "SSLV3_ALERT_BAD_CERTIFICATE",
)
CLIENT_REFUSED_34 = FakeRpcError(
    grpc.StatusCode.UNAVAILABLE,
    "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:2379: Unwrap failed (TSI_DATA_CORRUPTED)",
)
REFUSED = FakeRpcError(
    grpc.StatusCode.UNAVAILABLE,
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused",
)


def test_tls_failures_reported_as_unavailable_are_recognised() -> None:
    assert classify(WRONG_CA) is Kind.TLS
    assert classify(CLIENT_REFUSED_35) is Kind.TLS
    assert classify(CLIENT_REFUSED_34) is Kind.TLS
    assert classify(REFUSED) is Kind.UNREACHABLE
    assert classify(FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")) is Kind.TIMEOUT
    assert classify(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")) is Kind.UNREACHABLE


def test_wrong_ca_becomes_auth_error_pointing_at_cacert() -> None:
    error = translate("status", "https://n1:2379", WRONG_CA)
    assert isinstance(error, EtcdAuthError)
    assert "not signed by the CA given with --cacert" in str(error)
    assert "https://n1:2379" in str(error)


@pytest.mark.parametrize("rpc_error", [CLIENT_REFUSED_35, CLIENT_REFUSED_34])
def test_refused_client_certificate_becomes_auth_error_pointing_at_cert(rpc_error: FakeRpcError) -> None:
    error = translate("member list", "https://n1:2379", rpc_error)
    assert isinstance(error, EtcdAuthError)
    assert "refused our client certificate" in str(error) and "--cert/--key" in str(error)


def test_tls_failure_on_any_endpoint_wins_over_unreachable_ones() -> None:
    error = exhausted("put", [attempt("https://a:1", REFUSED), attempt("https://b:1", WRONG_CA)])
    assert isinstance(error, EtcdAuthError) and "https://b:1" in str(error)


def test_unavailable_everywhere_lists_every_endpoint_tried() -> None:
    error = exhausted("range", [attempt("https://a:1", REFUSED), attempt("https://b:1", REFUSED)])
    assert isinstance(error, EtcdUnavailable) and not isinstance(error, EtcdAuthError)
    message = str(error)
    assert "https://a:1" in message and "https://b:1" in message and "Connection refused" in message
    assert "failed to connect to all addresses" not in message
    assert "\n" not in message


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED])
def test_authentication_refusals_become_auth_errors(code: grpc.StatusCode) -> None:
    error = translate("range", "https://a:1", FakeRpcError(code, "etcdserver: permission denied"))
    assert isinstance(error, EtcdAuthError)


def test_compacted_revision_is_a_not_found_saying_compacted() -> None:
    error = translate(
        "range", "https://a:1",
        FakeRpcError(grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"),
    )
    assert isinstance(error, RevisionCompacted) and isinstance(error, NotFound)
    assert "compacted" in str(error)


def test_any_other_refusal_is_operation_failed_with_etcds_reason() -> None:
    error = translate(
        "txn", "https://a:1",
        FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: too many operations in txn request"),
    )
    assert type(error) is OperationFailed
    assert "too many operations" in str(error) and "INVALID_ARGUMENT" in str(error)


def test_long_grpc_details_are_shortened_to_one_readable_line() -> None:
    error = translate("put", "https://a:1", FakeRpcError(grpc.StatusCode.INTERNAL, "x" * 5000))
    assert len(str(error)) < 400

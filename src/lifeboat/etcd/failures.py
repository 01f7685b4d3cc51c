"""The one place where gRPC failures become lifeboat errors.

gRPC reports a failed TLS handshake as ``UNAVAILABLE`` with the reason only in the
details text (``Tls handshake failed ... CERTIFICATE_VERIFY_FAILED``, or for a client
certificate the server refused, ``SSLV3_ALERT_BAD_CERTIFICATE`` / ``TSI_DATA_CORRUPTED``
when the TLS 1.3 alert arrives after the handshake). We look for those words so that a
user sees "TLS failed, check --cacert/--cert/--key", not "etcd unreachable".
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from lifeboat.errors import (
    EtcdAuthError,
    EtcdUnavailable,
    LifeboatError,
    NotFound,
    OperationFailed,
)

TLS_HINT = (
    "check --cacert (the CA that signed etcd's server certificate) and --cert/--key "
    "(a client certificate signed by a CA etcd trusts)"
)

# Lower-cased fragments of grpc-core / BoringSSL messages that only a TLS failure produces.
_TLS_MARKERS = (
    "handshake",
    "ssl_error",
    "certificate_verify_failed",
    "alert_bad_certificate",
    "certificate_required",
    "alert_unknown_ca",
    "tsi_data_corrupted",
    "unwrap failed",
    "not in peer certificate",
    "x509",
)


class RpcErrorLike(Protocol):
    """What we read from a ``grpc.RpcError`` (every error raised by a grpc call has both)."""

    def code(self) -> object: ...

    def details(self) -> str | None: ...


class Kind(enum.Enum):
    """How a failed call counts for failover."""

    UNREACHABLE = "unreachable"  # try the next endpoint
    TIMEOUT = "timeout"  # try the next endpoint when the call is safe to repeat
    TLS = "tls"  # try the next endpoint; if all fail, blame TLS
    FINAL = "final"  # the server answered: no other endpoint will answer differently


class RevisionCompacted(NotFound):
    """A read or watch asked for a revision etcd has already compacted away."""


@dataclass(frozen=True)
class Attempt:
    """One endpoint's failed try, kept to explain an ``EtcdUnavailable``."""

    endpoint: str
    kind: Kind
    reason: str


def _code_name(error: RpcErrorLike) -> str:
    code = error.code()
    return str(getattr(code, "name", code))


def _details(error: RpcErrorLike) -> str:
    return (error.details() or "").strip()


def is_tls_failure(details: str) -> bool:
    text = details.lower()
    return any(marker in text for marker in _TLS_MARKERS)


def classify(error: RpcErrorLike) -> Kind:
    code, details = _code_name(error), _details(error)
    if code in ("UNAVAILABLE", "UNKNOWN") and is_tls_failure(details):
        return Kind.TLS
    if code == "UNAVAILABLE":
        return Kind.UNREACHABLE
    if code == "DEADLINE_EXCEEDED":
        return Kind.TIMEOUT
    return Kind.FINAL


def tls_reason(details: str) -> str:
    """Say in words which side of the handshake refused."""
    text = details.lower()
    if "certificate_verify_failed" in text or "alert_unknown_ca" in text:
        return "etcd's server certificate is not signed by the CA given with --cacert"
    if "not in peer certificate" in text:
        return "etcd's server certificate does not name the host of the endpoint"
    if any(m in text for m in ("alert_bad_certificate", "certificate_required", "tsi_data_corrupted", "unwrap failed")):
        return "etcd refused our client certificate (missing, or not signed by a CA etcd trusts)"
    return "the TLS handshake failed"


def attempt(endpoint: str, error: RpcErrorLike) -> Attempt:
    kind = classify(error)
    details = _details(error)
    reason = tls_reason(details) if kind is Kind.TLS else f"{_code_name(error)}: {_short(details)}"
    return Attempt(endpoint, kind, reason)


def _short(details: str, limit: int = 200) -> str:
    # grpc-core prefixes connection failures with a generic phrase; the tail says why.
    text = details.replace("failed to connect to all addresses; last error: ", "")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def exhausted(what: str, attempts: Sequence[Attempt]) -> LifeboatError:
    """The error for a call that failed on every endpoint it tried."""
    tls = [a for a in attempts if a.kind is Kind.TLS]
    if tls:
        return EtcdAuthError(f"{what}: TLS with etcd at {tls[0].endpoint} failed: {tls[0].reason}; {TLS_HINT}")
    tried = ", ".join(f"{a.endpoint} ({a.reason})" for a in attempts)
    return EtcdUnavailable(
        f"{what}: no etcd endpoint answered; tried {tried}; check --endpoints and that etcd is running"
    )


def translate(what: str, endpoint: str, error: RpcErrorLike) -> LifeboatError:
    """The lifeboat error for ``error`` raised by a call to ``endpoint``."""
    kind = classify(error)
    if kind is not Kind.FINAL:
        return exhausted(what, [attempt(endpoint, error)])
    code, details = _code_name(error), _details(error)
    if code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return EtcdAuthError(
            f"{what}: etcd at {endpoint} refused the request ({_short(details)}); "
            "check that the client certificate's user has the needed etcd role"
        )
    if code == "OUT_OF_RANGE" and "compacted" in details:
        return RevisionCompacted(
            f"{what}: the revision asked for was compacted by etcd ({_short(details)}); "
            "read at a newer revision or take a new snapshot"
        )
    return OperationFailed(f"{what} failed on etcd at {endpoint}: {code}: {_short(details)}")


def broke_off(what: str, endpoint: str, received: int, error: RpcErrorLike) -> LifeboatError:
    """The error for a stream that failed after ``received`` bytes: etcd answered, then stopped.

    A connection lost or given up on mid-stream (etcd killed, frozen, the network gone) is
    unavailable, but "no endpoint answered" would be wrong: it says how far the stream got.
    """
    if received == 0 or classify(error) not in (Kind.UNREACHABLE, Kind.TIMEOUT):
        return translate(what, endpoint, error)
    return EtcdUnavailable(
        f"{what}: etcd stopped sending after {received >> 20} MiB "
        f"({_code_name(error)}: {_short(_details(error))}); check that etcd is running and retry"
    )


def write_timed_out(what: str, endpoint: str, timeout: float) -> EtcdUnavailable:
    return EtcdUnavailable(
        f"{what}: etcd at {endpoint} did not answer within --command-timeout {timeout:g}s; "
        "the write may or may not have been applied, check before retrying"
    )

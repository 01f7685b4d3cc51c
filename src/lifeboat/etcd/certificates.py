"""Why a certificate is refused: validity dates, checked offline and on etcd's server certificate.

A TLS library reports an expired certificate as a failed verification, the same words as a
certificate from another CA. lifeboat checks the dates of the files it is given before it
connects, and after a failed verification it reads etcd's certificate (without trusting it,
only to look at it) so that an expired one is called expired.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from lifeboat.clock import SystemClock

if TYPE_CHECKING:
    from cryptography import x509

_PEM_CERT = b"-----BEGIN CERTIFICATE-----"


def validity_problem(cert: x509.Certificate, now: datetime | None = None) -> str | None:
    """``expired on ...`` / ``not valid before ...``, or None when ``now`` is inside its dates."""
    now = now or SystemClock().now()
    if now > cert.not_valid_after_utc:
        return f"expired on {_when(cert.not_valid_after_utc)}"
    if now < cert.not_valid_before_utc:
        return f"is not valid before {_when(cert.not_valid_before_utc)}"
    return None


def pem_certificates(pem: bytes) -> Iterator[x509.Certificate]:
    """Every certificate in a PEM bundle (unparsable blocks are skipped: the TLS stack judges them)."""
    # Here, not at the top: only commands given TLS files need cryptography (list starts without it).
    from cryptography import x509

    for block in pem.split(_PEM_CERT)[1:]:
        try:
            yield x509.load_pem_x509_certificate(_PEM_CERT + block)
        except ValueError:
            continue


def server_certificate_problem(host: str, port: int, timeout: float,
                               client_cert: Path | None = None, client_key: Path | None = None) -> str | None:
    """Fetch the server's certificate without verifying it; say if its dates rule it out.

    Only called after a verification already failed, to name the reason; no request is sent.
    Our client certificate is shown, since etcd with client-cert-auth ends a handshake without one.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        if client_cert is not None and client_key is not None:
            context.load_cert_chain(client_cert, client_key)
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    if not der:
        return None
    from cryptography import x509

    problem = validity_problem(x509.load_der_x509_certificate(der))
    return f"etcd's server certificate {problem}; renew it on the etcd nodes" if problem else None


def _when(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

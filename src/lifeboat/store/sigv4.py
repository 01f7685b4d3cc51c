"""AWS Signature Version 4 for the few S3 requests obstore cannot make (multipart upload listing).

A pure function of the request, the credentials and the time: :func:`sign` returns the headers
to send. The algorithm is AWS's published one ("Signature Version 4 signing process",
single-chunk payload in the ``x-amz-content-sha256`` header): a canonical request is hashed
into a string to sign, which an HMAC key derived from the secret, the date, the region and the
service signs. ``tests/unit/store/test_sigv4.py`` checks it against AWS's published examples.

The secret never leaves this module except as that signature; :class:`AwsCredentials` keeps it
out of ``repr`` so a logged or raised object cannot show it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import parse_qsl, quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# RFC 3986's unreserved characters are the only ones SigV4 leaves unencoded.
_UNRESERVED = "-_.~"


@dataclass(frozen=True)
class AwsCredentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def encode_path(path: str) -> str:
    """``path`` percent-encoded the way S3 signs it: every byte but unreserved ones and ``/``."""
    return quote(path, safe="/" + _UNRESERVED)


def encode_query(params: Mapping[str, str]) -> str:
    """A query string in SigV4's canonical form: encoded, sorted by name, ``name=`` when empty."""
    pairs = sorted((quote(k, safe=_UNRESERVED), quote(v, safe=_UNRESERVED)) for k, v in params.items())
    return "&".join(f"{k}={v}" for k, v in pairs)


def sign(
    method: str,
    url: str,
    credentials: AwsCredentials,
    region: str,
    now: datetime,
    *,
    headers: Mapping[str, str] | None = None,
    payload_sha256: str = EMPTY_SHA256,
    service: str = "s3",
) -> dict[str, str]:
    """The headers that make ``method url`` an authenticated request (``headers`` included).

    ``url`` must be encoded already (see :func:`encode_path`); its query is canonicalised here.
    """
    parts = urlsplit(url)
    amz_date = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    sent = {"host": parts.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload_sha256}
    if credentials.session_token:
        sent["x-amz-security-token"] = credentials.session_token
    for name, value in (headers or {}).items():
        sent[name.lower()] = value
    names = sorted(sent)
    signed_names = ";".join(names)
    canonical = "\n".join([
        method.upper(),
        parts.path or "/",
        encode_query(dict(parse_qsl(parts.query, keep_blank_values=True))),
        "".join(f"{name}:{' '.join(sent[name].split())}\n" for name in names),
        signed_names,
        payload_sha256,
    ])
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signature = hmac.new(_signing_key(credentials.secret_access_key, amz_date[:8], region, service),
                         to_sign.encode(), hashlib.sha256).hexdigest()
    sent["authorization"] = (f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
                             f"SignedHeaders={signed_names}, Signature={signature}")
    return sent


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for step in (date, region, service, "aws4_request"):
        key = hmac.new(key, step.encode(), hashlib.sha256).digest()
    return key

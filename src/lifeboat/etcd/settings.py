"""How to reach etcd: endpoints, TLS files and timeouts, validated when built."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from lifeboat.config.rules import endpoint_problem
from lifeboat.errors import UsageError
from lifeboat.etcd.certificates import pem_certificates, validity_problem
from lifeboat.regular_files import read_small

DEFAULT_CLIENT_PORT = 2379


@dataclass(frozen=True)
class Endpoint:
    """One etcd client URL: ``url`` as the user wrote it, ``target`` as gRPC dials it."""

    url: str
    host: str
    port: int
    scheme: str | None

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def uses_tls(self, tls_configured: bool) -> bool:
        """https always, http never; a bare ``host:port`` when TLS files were given (as etcdctl)."""
        if self.scheme is None:
            return tls_configured
        return self.scheme == "https"


def parse_endpoint(text: str) -> Endpoint:
    """Parse ``https://host:port``, ``http://host:port`` or bare ``host:port``."""
    raw = text.strip()
    problem = endpoint_problem(raw)
    if problem is not None:
        raise UsageError(f"--endpoints: {problem}")
    has_scheme = "://" in raw
    parts = urlsplit(raw if has_scheme else f"//{raw}")
    return Endpoint(url=raw, host=parts.hostname or "", port=parts.port or DEFAULT_CLIENT_PORT,
                    scheme=parts.scheme.lower() if has_scheme else None)


@dataclass(frozen=True)
class TlsMaterial:
    """The PEM bytes read from a :class:`TlsConfig`; never logged or put in messages."""

    ca: bytes | None = field(repr=False)
    cert: bytes | None = field(repr=False)
    key: bytes | None = field(repr=False)


@dataclass(frozen=True)
class TlsConfig:
    """TLS files named like etcdctl's flags: ``--cacert``, ``--cert``, ``--key``."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise UsageError("--cert and --key must be given together (client certificate and its key)")

    def load(self) -> TlsMaterial:
        """Read and sanity-check the files; a missing or non-PEM file raises ``UsageError``.

        A key that does not belong to the certificate is refused here: the server would
        otherwise only report a failed handshake.
        """
        material = TlsMaterial(
            ca=_read_pem(self.ca, "--cacert", b"CERTIFICATE"),
            cert=_read_pem(self.cert, "--cert", b"CERTIFICATE"),
            key=_read_pem(self.key, "--key", b"PRIVATE KEY"),
        )
        if material.cert is not None and material.key is not None:
            _check_pair(material.cert, material.key, self.cert, self.key)
        _check_dates(material, self)
        return material


def _check_dates(material: TlsMaterial, paths: TlsConfig) -> None:
    """An expired client certificate (or CA) is named as such: TLS would only say "verify failed"."""
    leaf = next(pem_certificates(material.cert), None) if material.cert else None
    problem = validity_problem(leaf) if leaf is not None else None
    if problem:
        raise UsageError(f"--cert {paths.cert}: the client certificate {problem}; renew it "
                         "(on kubeadm: 'kubeadm certs renew')")
    # A CA bundle may keep an old CA beside its successor: refuse only when none is valid.
    problems = [validity_problem(ca) for ca in pem_certificates(material.ca)] if material.ca else []
    if problems and all(problems):
        raise UsageError(f"--cacert {paths.ca}: the CA certificate {problems[0]}; renew the CA")


def _read_pem(path: Path | None, flag: str, label: bytes) -> bytes | None:
    if path is None:
        return None
    # A certificate bundle or key is a few KiB: the 1 MiB cap refuses /dev/zero unread.
    data = read_small(path, f"{flag} file")
    if b"-----BEGIN " not in data or label + b"-----" not in data:
        raise UsageError(f"{flag} {path}: not a PEM file holding a {label.decode().lower()}")
    return data


@dataclass(frozen=True)
class ConnectionSettings:
    """Where etcd is and how long to wait for it.

    ``dial_timeout`` bounds connecting to (and the TLS handshake with) one endpoint;
    ``command_timeout`` is the deadline of every unary call.
    """

    endpoints: tuple[str, ...]
    tls: TlsConfig | None = None
    dial_timeout: float = 5.0
    command_timeout: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.endpoints, str):
            raise UsageError("--endpoints must be a list of URLs, not one string")
        if not self.endpoints:
            raise UsageError("--endpoints: no etcd endpoint given; pass e.g. https://127.0.0.1:2379")
        for value, flag in ((self.dial_timeout, "--dial-timeout"), (self.command_timeout, "--command-timeout")):
            if not value > 0:
                raise UsageError(f"{flag} must be a positive number of seconds, got {value}")
        self.parsed_endpoints()

    def parsed_endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(parse_endpoint(e) for e in self.endpoints)

    @classmethod
    def from_flags(
        cls, endpoints: str, tls: TlsConfig | None = None,
        dial_timeout: float = 5.0, command_timeout: float = 10.0,
    ) -> ConnectionSettings:
        """Build from an etcdctl-style comma-separated ``--endpoints`` value."""
        items = tuple(e.strip() for e in endpoints.split(",") if e.strip())
        return cls(items, tls, dial_timeout, command_timeout)


def _check_pair(cert_pem: bytes, key_pem: bytes, cert_path: Path | None, key_path: Path | None) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise UsageError(f"--cert {cert_path}: the certificate cannot be parsed") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise UsageError(f"--key {key_path}: the private key cannot be read (encrypted keys are not supported)") from None
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*raw) != key.public_key().public_bytes(*raw):
        raise UsageError(f"--key {key_path} does not belong to the certificate --cert {cert_path}")

"""Expired certificates are called expired, not "not signed by the CA"."""

from __future__ import annotations

import datetime as dt
import ipaddress
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lifeboat.restore.supervisor import port_answers
from tests.support.binaries import EtcdRelease
from tests.support.cli import Cli
from tests.support.etcd import EtcdMember
from tests.support.pki import CertPair, Pki

pytestmark = pytest.mark.integration


def expired_leaf(pki: Pki, directory: Path, name: str, server: bool) -> CertPair:
    """A certificate signed by ``pki``'s CA that expired yesterday (valid for a day before)."""
    ca_key = serialization.load_pem_private_key(pki.ca.with_suffix(".key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server \
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=2)).not_valid_after(now - dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert, pem = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return CertPair(cert, pem)


@pytest.fixture(scope="module")
def etcd_with_expired_server_cert(
    release35: EtcdRelease, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EtcdMember]:
    workdir = tmp_path_factory.mktemp("expired-server")
    stale = replace(pki, node=expired_leaf(pki, workdir / "pki", "node", server=True))
    member = EtcdMember(release35, "m0", workdir, stale)
    member.start(f"m0={member.peer_url}", "expired")
    try:
        deadline = time.monotonic() + 30
        while not port_answers("127.0.0.1", member.client_port) and time.monotonic() < deadline:
            time.sleep(0.1)
        yield member
    finally:
        member.stop()


def test_expired_server_certificate_is_reported_as_expired(
    cli: Cli, etcd_with_expired_server_cert: EtcdMember, pki: Pki, tmp_path: Path
) -> None:
    code, _out, err = cli("backup", f"--endpoints={etcd_with_expired_server_cert.client_url}",
                          f"--cacert={pki.ca}", f"--cert={pki.client.cert}", f"--key={pki.client.key}",
                          "--repo", str(tmp_path / "repo"), "--no-files", "--dial-timeout=3")
    assert code == 2, err
    assert "server certificate expired on" in err and "not signed" not in err and err.count("\n") == 1


def test_expired_client_certificate_is_reported_as_expired_before_connecting(
    cli: Cli, pki: Pki, tmp_path: Path
) -> None:
    stale = expired_leaf(pki, tmp_path / "pki", "client", server=False)
    code, _out, err = cli("status", "--endpoints=https://127.0.0.1:1", f"--cacert={pki.ca}",
                          f"--cert={stale.cert}", f"--key={stale.key}")
    assert code == 3, err
    assert f"--cert {stale.cert}: the client certificate expired on" in err and err.count("\n") == 1

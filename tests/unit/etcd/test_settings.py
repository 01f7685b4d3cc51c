from __future__ import annotations

from pathlib import Path

import pytest

from lifeboat.errors import UsageError
from lifeboat.etcd.settings import ConnectionSettings, TlsConfig, parse_endpoint

CERT = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    ("text", "target", "scheme"),
    [
        ("https://10.0.0.1:2379", "10.0.0.1:2379", "https"),
        ("http://etcd-0.local:4001", "etcd-0.local:4001", "http"),
        ("127.0.0.1:32379", "127.0.0.1:32379", None),
        ("https://[::1]:2379", "[::1]:2379", "https"),
        ("https://10.0.0.1", "10.0.0.1:2379", "https"),
        ("  HTTPS://node:2379/  ", "node:2379", "https"),
    ],
)
def test_endpoint_urls_and_bare_host_ports_are_accepted(text: str, target: str, scheme: str | None) -> None:
    endpoint = parse_endpoint(text)
    assert endpoint.target == target
    assert endpoint.scheme == scheme


@pytest.mark.parametrize("text", ["", "unix:///var/run/etcd.sock", "https://:2379", "host:notaport", "https://h:2379/v3"])
def test_malformed_endpoint_is_a_usage_error_naming_the_flag(text: str) -> None:
    with pytest.raises(UsageError, match="--endpoints"):
        parse_endpoint(text)


def test_bare_endpoint_uses_tls_only_when_tls_files_are_given() -> None:
    bare = parse_endpoint("127.0.0.1:2379")
    assert bare.uses_tls(True) and not bare.uses_tls(False)
    assert parse_endpoint("https://h:1").uses_tls(False)
    assert not parse_endpoint("http://h:1").uses_tls(True)


def test_settings_reject_no_endpoints_and_non_positive_timeouts() -> None:
    with pytest.raises(UsageError, match="--endpoints"):
        ConnectionSettings(())
    with pytest.raises(UsageError, match="--dial-timeout"):
        ConnectionSettings(("h:1",), dial_timeout=0)
    with pytest.raises(UsageError, match="--command-timeout"):
        ConnectionSettings(("h:1",), command_timeout=-1)
    with pytest.raises(UsageError, match="--endpoints"):
        ConnectionSettings(("https://h:1", "ftp://h:2"))


def test_comma_separated_endpoints_flag_is_split_like_etcdctl() -> None:
    settings = ConnectionSettings.from_flags("https://a:2379, https://b:2379,,")
    assert settings.endpoints == ("https://a:2379", "https://b:2379")


@pytest.mark.parametrize(
    ("field", "flag"), [("ca", "--cacert"), ("cert", "--cert"), ("key", "--key")]
)
def test_missing_tls_file_names_its_flag(tmp_path: Path, field: str, flag: str) -> None:
    files = {"ca": tmp_path / "ca.crt", "cert": tmp_path / "c.crt", "key": tmp_path / "c.key"}
    files["ca"].write_bytes(CERT)
    files["cert"].write_bytes(CERT)
    files["key"].write_bytes(KEY)
    files[field].unlink()
    with pytest.raises(UsageError, match=f"^cannot read {flag} file .*: No such file or directory$"):
        TlsConfig(**files).load()


def test_non_pem_tls_file_is_rejected_without_echoing_it(tmp_path: Path) -> None:
    key = tmp_path / "c.key"
    key.write_bytes(b"secret-not-a-key")
    cert = tmp_path / "c.crt"
    cert.write_bytes(CERT)
    with pytest.raises(UsageError, match="--key .*not a PEM") as raised:
        TlsConfig(cert=cert, key=key).load()
    assert "secret" not in str(raised.value).replace(str(tmp_path), "")


def test_a_key_in_place_of_the_ca_is_rejected(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(KEY)
    with pytest.raises(UsageError, match="--cacert"):
        TlsConfig(ca=ca).load()


def test_cert_without_key_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--cert and --key"):
        TlsConfig(cert=tmp_path / "c.crt")


def test_loaded_tls_material_never_shows_in_repr(tmp_path: Path) -> None:
    from tests.support.pki import make_pki

    pki = make_pki(tmp_path)
    assert "PRIVATE" not in repr(TlsConfig(cert=pki.client.cert, key=pki.client.key).load())

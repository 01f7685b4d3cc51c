"""A file named in a flag or the config that is a FIFO, a device or a directory is refused unread.

Read whole, /dev/zero takes all memory (on a control-plane node the kernel may then kill etcd);
opening a FIFO waits for a writer forever. Small files (keys, certificates, configs) are also
refused above 1 MiB without being read whole.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.cli import Cli

KINDS = ["fifo", "device", "directory", "huge"]
PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def special_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "special"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        return Path("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"#" * (2 << 20))
    return path


def assert_refused(code: int, err: str, named: str, kind: str) -> None:
    wanted = "is larger than 1 MiB" if kind == "huge" else "is not a regular file"
    assert code == 3, err
    assert err.count("\n") == 1 and named in err and wanted in err, err


def tls_args(tmp_path: Path, flag: str, path: Path) -> list[str]:
    certificate = tmp_path / "client.crt"
    certificate.write_text(PEM_CERTIFICATE)
    pair = ["--cert", str(certificate), "--key", str(path)] if flag == "--key" else [flag, str(path)]
    return ["status", "--endpoints", "https://127.0.0.1:1", *pair]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("flag", ["--cacert", "--key"])
def test_a_tls_file_that_is_not_a_small_regular_file_is_refused_unread(
        cli: Cli, tmp_path: Path, flag: str, kind: str) -> None:
    path = special_file(tmp_path, kind)
    code, _out, err = cli(*tls_args(tmp_path, flag, path))
    assert_refused(code, err, f"{flag} file {path} ", kind)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("key", ["access-key-id-file", "secret-access-key-file"])
def test_an_s3_key_file_that_is_not_a_small_regular_file_is_refused_unread(
        cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, kind: str) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    path = special_file(tmp_path, kind)
    good = tmp_path / "good-key"
    good.write_text("AKIAEXAMPLE\n")
    files = {"access-key-id-file": good, "secret-access-key-file": good, key: path}
    config = tmp_path / "lifeboat.yaml"
    config.write_text("repository:\n  url: s3://bucket/prefix\n  s3:\n    endpoint-url: http://127.0.0.1:1\n"
                      + "".join(f"    {name}: {value}\n" for name, value in files.items()))
    code, _out, err = cli("list", "--config", str(config))
    assert_refused(code, err, f"repository.s3.{key} {path} ", kind)


def encryption_config_args(tmp_path: Path, path: Path) -> list[str]:
    return ["k8s", "ls", str(tmp_path / "snapshot.db"), "--encryption-config", str(path)]


def recipients_args(tmp_path: Path, path: Path) -> list[str]:
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"encryption:\n  recipients: ['{path}']\n")
    return ["config", "validate", str(config)]


# What names the file, and the command line that reads it.
SMALL_FILES = {
    "encryption configuration": encryption_config_args,
    "recipients file": recipients_args,
    "config file": lambda _tmp_path, path: ["config", "validate", str(path)],
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("what", SMALL_FILES)
def test_a_small_file_that_is_not_a_small_regular_file_is_refused_unread(
        cli: Cli, tmp_path: Path, what: str, kind: str) -> None:
    path = special_file(tmp_path, kind)
    code, _out, err = cli(*SMALL_FILES[what](tmp_path, path))
    assert_refused(code, err, f"{what} {path} ", kind)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
@pytest.mark.parametrize("verb", ["status", "check"])
def test_a_snapshot_file_that_is_not_a_regular_file_is_a_usage_error(
        cli: Cli, tmp_path: Path, verb: str, kind: str) -> None:
    """As ``k8s ls`` refuses it; a snapshot has no size cap, only the regular-file check."""
    path = special_file(tmp_path, kind)
    code, _out, err = cli("snapshot", verb, str(path))
    assert_refused(code, err, f"snapshot file {path} ", kind)


@pytest.mark.parametrize("kind", KINDS)
def test_config_validate_reads_the_s3_key_files_this_host_has(cli: Cli, tmp_path: Path, kind: str) -> None:
    """It passed a key file that is /dev/zero or a FIFO, which every command then refused."""
    key = special_file(tmp_path, kind)
    secret = tmp_path / "secret"
    secret.write_text("a-secret-value\n")
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"repository: {{url: 's3://bucket/prefix', s3: {{access-key-id-file: {key}, "
                      f"secret-access-key-file: {secret}}}}}\n")
    code, _, err = cli("config", "validate", str(config))
    assert_refused(code, err, "access-key-id-file", kind)
    assert "a-secret-value" not in err
    config.write_text(f"repository: {{url: 's3://bucket/prefix', s3: {{access-key-id-file: {tmp_path / 'absent'}, "
                      f"secret-access-key-file: {secret}}}}}\n")
    assert cli("config", "validate", str(config))[0] == 0  # for the host that runs the backups

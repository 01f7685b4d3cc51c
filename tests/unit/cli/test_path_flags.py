"""A path typed on the command line means what it means in the shell: it is made absolute against
the directory it is typed in, when it is parsed. The config file and the environment must give
absolute paths (they serve the agent, in /, and commands run from anywhere): a relative one is
refused, exit 3, naming the file or variable and the key.

(Only ``root`` was refused; every other path in the file was taken relative to whatever directory
each command ran in.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeboat.agent.runtime import _Repository
from lifeboat.catalog.repository import BackupRepository
from lifeboat.cli.connect import resolved_config
from lifeboat.cli.main import build_parser
from lifeboat.errors import UsageError
from lifeboat.store import open_store
from tests.support.cli import Cli

AGE_RECIPIENT = "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq"


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LIFEBOAT_CONFIG", "LIFEBOAT_ROOT", "LIFEBOAT_REPO", "LIFEBOAT_CLUSTER", "ETCDCTL_ENDPOINTS",
                "ETCDCTL_CACERT", "ETCDCTL_CERT", "ETCDCTL_KEY", "LIFEBOAT_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)


def test_path_flags_are_taken_from_the_directory_they_are_typed_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args([
        "capture", "--cacert", "pki/ca.crt", "--cert", "pki/c.crt", "--key", "../c.key", "--repo", "repo",
        "--encrypt-to", "recipients.txt", "--encrypt-to", AGE_RECIPIENT, "--tmp-dir", "tmp", "--spool-dir", "spool",
    ])
    identity = build_parser().parse_args(["verify", "latest", "--identity", "keys/age.txt"])
    monkeypatch.chdir("/")  # the command's later work does not change what they mean
    config = resolved_config(args).config
    assert (config.etcd.cacert, config.etcd.cert, config.etcd.key) == (
        tmp_path / "pki/ca.crt", tmp_path / "pki/c.crt", tmp_path / "../c.key")
    assert config.repository.url == str(tmp_path / "repo")
    assert config.encryption.recipients == [str(tmp_path / "recipients.txt"), AGE_RECIPIENT]
    assert (config.backup.tmp_dir, config.capture.spool_dir) == (tmp_path / "tmp", tmp_path / "spool")
    assert resolved_config(identity).config.encryption.identity_files == [tmp_path / "keys/age.txt"]


def test_urls_and_keys_given_as_flags_are_kept_as_typed() -> None:
    args = build_parser().parse_args(["backup", "--repo", "s3://bucket/prefix", "--encrypt-to", "ssh-ed25519 AAAA x"])
    assert (args.repo, args.encrypt_to) == ("s3://bucket/prefix", ["ssh-ed25519 AAAA x"])


@pytest.mark.parametrize("flag", ["--cacert", "--tmp-dir", "--identity", "--root"])
def test_an_empty_path_flag_is_refused_not_taken_as_the_current_directory(cli: Cli, flag: str) -> None:
    code, out, err = cli("verify", "latest", flag, "") if flag in ("--tmp-dir", "--identity") \
        else cli("backup", flag, "")
    assert (code, out) == (3, "")
    assert f"argument {flag}{'/-i' if flag == '--identity' else ''}: must be a path, got an empty value" in err


def test_a_command_refuses_a_relative_path_in_its_config_file_in_one_line(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "lifeboat.yaml"
    config.write_text("backup:\n  tmp-dir: spool\n")
    code, out, err = cli("backup", "--config", str(config), "--repo", str(tmp_path / "repo"))
    assert (code, out) == (3, "")
    assert err == f"lifeboat: error: {config}: backup.tmp-dir: must be an absolute path such as /var/tmp, got 'spool'\n"


@pytest.mark.parametrize("command", [("config", "show"), ("list",), ("agent",)])
def test_a_relative_config_file_in_the_environment_is_refused_in_one_line(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...],
) -> None:
    # Under systemd or cron it would name a file in whatever directory the command ran in.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lifeboat.yaml").write_text(f"repository:\n  url: {tmp_path / 'repo'}\n")  # there, and still refused
    monkeypatch.setenv("LIFEBOAT_CONFIG", "lifeboat.yaml")
    code, out, err = cli(*command)
    assert (code, out) == (3, "")
    assert err == ("lifeboat: error: $LIFEBOAT_CONFIG: must be an absolute path such as "
                   "/etc/lifeboat/lifeboat.yaml, got 'lifeboat.yaml'\n")


def test_a_relative_cache_dir_in_the_environment_is_refused_in_one_line(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    BackupRepository.open(open_store(str(tmp_path / "repo")), create=True)
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", "cache")
    code, out, err = cli("list", "--repo", str(tmp_path / "repo"))
    assert (code, out) == (3, "")
    assert err == "lifeboat: error: $LIFEBOAT_CACHE_DIR: must be an absolute path such as /var/cache/lifeboat, got 'cache'\n"
    assert not (tmp_path / "cache").exists()
    assert cli("list", "--repo", str(tmp_path / "repo"), "--cache-dir", "flag-cache")[0] == 0  # a flag wins, as typed
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "env-cache"))
    assert cli("list", "--repo", str(tmp_path / "repo"))[0] == 0


def test_the_agent_refuses_a_relative_cache_dir_when_it_starts_not_in_each_cycle() -> None:
    with pytest.raises(UsageError, match=r"\$LIFEBOAT_CACHE_DIR: must be an absolute path .* got 'cache'"):
        _Repository("file:///srv/backups", {"LIFEBOAT_CACHE_DIR": "cache"}, recorded=lambda: False)

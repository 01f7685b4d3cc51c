"""A private key given where a public recipient belongs is refused, and none of it is ever shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyrage
import pytest

from lifeboat.cli.main import main

WINDOW = 8


class Run:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str]:
        self.capsys.readouterr()
        code = main(list(args))
        out, err = self.capsys.readouterr()
        return code, out + err


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    for var in ("LIFEBOAT_CONFIG", "LIFEBOAT_REPO", "LIFEBOAT_CLUSTER"):
        monkeypatch.delenv(var, raising=False)
    return Run(capsys)


@pytest.fixture
def secret() -> str:
    return str(pyrage.x25519.Identity.generate())


def assert_no_part_of(secret: str, text: str) -> None:
    """No WINDOW consecutive characters of ``secret`` appear in ``text`` (any case)."""
    folded = text.upper()
    leaked = [secret[i:i + WINDOW] for i in range(len(secret) - WINDOW + 1)
              if secret[i:i + WINDOW].upper() in folded]
    assert not leaked, f"output shows part of the secret: {leaked[:3]}"


def identity_file(tmp_path: Path, secret: str, name: str = "key.txt") -> Path:
    path = tmp_path / name
    path.write_text(f"# created: 2026-01-01T00:00:00Z\n# public key: age1...\n{secret}\n")
    return path


def test_identity_file_given_to_encrypt_to_is_refused_naming_the_file_only(
        run: Run, tmp_path: Path, secret: str) -> None:
    key = identity_file(tmp_path, secret)
    code, output = run("backup", "-v", "--repo", str(tmp_path / "repo"), "--encrypt-to", str(key),
                       "--endpoints", "127.0.0.1:1")
    assert code == 3
    assert str(key) in output and "private key" in output and "age-keygen -y" in output
    assert_no_part_of(secret, output)
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("mangle", [lambda s: s, lambda s: s[:-3] + "QQQ", lambda s: s.lower(), lambda s: s[:40]])
def test_identity_given_inline_to_encrypt_to_is_refused_without_its_value(
        run: Run, tmp_path: Path, secret: str, mangle: object) -> None:
    assert callable(mangle)
    value = mangle(secret)
    code, output = run("backup", "-v", "--repo", str(tmp_path / "repo"), "--encrypt-to", value,
                       "--endpoints", "127.0.0.1:1")
    assert code == 3 and "private key" in output
    assert_no_part_of(value, output)


def test_ssh_private_key_given_to_encrypt_to_is_refused_without_its_content(run: Run, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    body = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZWQyNTUxOQ"
    key.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n-----END OPENSSH PRIVATE KEY-----\n")
    code, output = run("backup", "-v", "--repo", str(tmp_path / "repo"), "--encrypt-to", str(key))
    assert code == 3 and str(key) in output
    assert_no_part_of(body, output)


@pytest.mark.parametrize("inline", [False, True])
def test_config_validate_refuses_an_identity_among_the_recipients(
        run: Run, tmp_path: Path, secret: str, inline: bool) -> None:
    value = secret if inline else str(identity_file(tmp_path, secret))
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"encryption:\n  recipients: ['{value}']\n")
    code, output = run("config", "validate", "-v", str(config))
    assert code == 3 and "encryption.recipients" in output and "private key" in output
    assert_no_part_of(secret, output)
    code, output = run("config", "show", "-v", "--config", str(config))
    assert code == (3 if inline else 0)  # a file is shown by its path
    assert_no_part_of(secret, output)


def test_identity_where_a_list_belongs_is_not_echoed_in_the_type_error(
        run: Run, tmp_path: Path, secret: str) -> None:
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"encryption:\n  recipients: {secret}\n")
    code, output = run("config", "validate", str(config))
    assert code == 3 and "must be a list" in output
    assert_no_part_of(secret, output)


def test_agent_with_an_identity_as_recipient_exits_3_and_logs_none_of_it(tmp_path: Path, secret: str) -> None:
    key = identity_file(tmp_path, secret)
    config = tmp_path / "lifeboat.yaml"
    config.write_text(
        f"repository: {{url: {tmp_path / 'repo'}}}\n"
        f"etcd: {{endpoints: [127.0.0.1:1]}}\n"
        f"encryption: {{recipients: ['{key}']}}\n"
        "schedules: {backup: '@hourly'}\n"
        "agent: {listen: '127.0.0.1:0', log-format: json}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFEBOAT_", "ETCDCTL_"))}
    done = subprocess.run([sys.executable, "-m", "lifeboat.cli.main", "agent", "-v", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 3, done.stderr
    assert str(key) in done.stderr
    assert_no_part_of(secret, done.stdout + done.stderr)


@pytest.mark.parametrize("where", ["bare", "in-a-path"])
@pytest.mark.parametrize("command", [
    ("verify", "latest"), ("restore", "plan", "latest", "--initial-cluster", "m=http://127.0.0.1:2380"),
    ("k8s", "ls", "latest"),
])
def test_an_identity_given_inline_to_identity_is_refused_without_its_value(
        run: Run, tmp_path: Path, secret: str, where: str, command: tuple[str, ...]) -> None:
    """A key pasted where its file's path belongs: no message shows it, and no plan copies it
    into the commands it prints for every node."""
    value = secret if where == "bare" else f"{tmp_path}/{secret}"
    code, output = run(*command, "--repo", str(tmp_path / "repo"), "--cluster", "a", "--identity", value)
    assert code == 3 and "private key" in output and "not shown" in output
    assert_no_part_of(secret, output)


@pytest.mark.parametrize("how", ["config validate", "config show"])
def test_config_refuses_an_identity_given_as_an_identity_files_path(
        run: Run, tmp_path: Path, secret: str, how: str) -> None:
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"encryption:\n  identity-files: ['/etc/lifeboat/{secret}']\n")
    code, output = run(*how.split(), *(["--config"] if how == "config show" else []), str(config))
    assert code == 3 and "encryption.identity-files" in output and "private key" in output
    assert_no_part_of(secret, output)


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "huge"])
def test_an_identity_file_that_is_not_a_small_regular_file_is_refused_unread(
        run: Run, tmp_path: Path, kind: str) -> None:
    """/dev/zero read whole takes all memory (the kernel may then kill etcd); a FIFO blocks."""
    path = tmp_path / "key"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path = Path("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"#" * (2 << 20))
    code, output = run("verify", "latest", "--repo", str(tmp_path / "repo"), "--identity", str(path))
    wanted = "larger than 1 MiB" if kind == "huge" else "is not a regular file"
    assert code == 3 and f"identity file {path} " in output and wanted in output


@pytest.mark.parametrize("key, yaml_value", [
    ("cluster", "cluster: '{secret}'"),
    ("backup.zstd-level", "backup: {{zstd-level: '{secret}'}}"),
    ("etcd.dial-timeout", "etcd: {{dial-timeout: '{secret}'}}"),
    ("schedules.backup", "schedules: {{backup: '{secret}'}}"),
    ("retention.keep-within", "retention: {{keep-within: '{secret}'}}"),
])
def test_an_identity_pasted_into_any_config_value_is_refused_without_its_value(
        run: Run, tmp_path: Path, secret: str, key: str, yaml_value: str) -> None:
    """Not only recipients and identity files: a key pasted under the wrong key (a cluster name,
    a number, a duration, a cron expression) was echoed whole in the message."""
    config = tmp_path / "lifeboat.yaml"
    config.write_text(yaml_value.format(secret=secret) + "\n")
    code, output = run("config", "validate", str(config))
    assert code == 3 and key in output
    assert_no_part_of(secret, output)


@pytest.mark.parametrize("flags", [
    ("list", "--cluster", "{secret}"),
    ("prune", "--keep-within", "{secret}"),
    ("backup", "--dial-timeout", "{secret}"),
    ("backup", "--zstd-level", "{secret}"),
    ("backup", "--endpoints", "{secret}"),
    ("list", "--since", "{secret}"),
    ("verify", "{secret}"),
])
def test_an_identity_pasted_into_any_flag_is_refused_without_its_value(
        run: Run, tmp_path: Path, secret: str, flags: tuple[str, ...]) -> None:
    args = [arg.format(secret=secret) for arg in flags]
    code, output = run(*args, "--repo", str(tmp_path / "repo"))
    assert code in (2, 3), output  # refused, or (no repository, an endpoint not found) failed on it
    assert_no_part_of(secret, output)


@pytest.mark.parametrize("flags", [("verify", "{secret}"), ("list", "--since", "{secret}"),
                                   ("backup", "--endpoints", "{secret}")])
def test_a_traceback_of_v_shows_no_private_key_either(
        run: Run, tmp_path: Path, secret: str, flags: tuple[str, ...]) -> None:
    """-v prints the traceback after the error line: its last line repeats the message, which the
    error line had hidden the key from."""
    repo = tmp_path / "repo"
    if flags[0] != "backup":
        run("backup", "--repo", str(repo), "--endpoints", "127.0.0.1:1")  # creates the repository, fails after
    code, output = run(*[arg.format(secret=secret) for arg in flags], "-v", "--repo", str(repo))
    assert code in (2, 3) and "Traceback" in output, output
    assert_no_part_of(secret, output)


def test_an_identity_in_the_cluster_variable_is_refused_without_its_value(
        run: Run, tmp_path: Path, secret: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFEBOAT_CLUSTER", secret)
    code, output = run("list", "--repo", str(tmp_path / "repo"))
    assert code == 3 and "LIFEBOAT_CLUSTER" in output
    assert_no_part_of(secret, output)


def test_a_huge_bad_config_value_is_not_echoed_whole(run: Run, tmp_path: Path) -> None:
    config = tmp_path / "lifeboat.yaml"
    config.write_text("cluster: '" + "a" * 500_000 + "'\nbackup: {zstd-level: '" + "9" * 500_000 + "'}\n")
    code, output = run("config", "validate", str(config))
    assert code == 3 and "cluster" in output and "zstd-level" in output
    assert len(output) < 2000


@pytest.mark.parametrize("label", ["token={secret}", "{secret}=x"])
def test_a_label_holding_a_private_key_is_refused_before_it_is_stored_in_the_clear(
        run: Run, tmp_path: Path, secret: str, label: str) -> None:
    """Labels go into the manifest, which is never encrypted (nor is a pin's reason): a key given
    there was stored in the clear in the repository, for anyone who can list it."""
    code, output = run("backup", "--repo", str(tmp_path / "repo"), "--endpoints", "127.0.0.1:1",
                       "--label", label.format(secret=secret))
    assert code == 3 and "label" in output and "private key" in output
    assert_no_part_of(secret, output)
    assert not (tmp_path / "repo").exists()


def test_a_pin_reason_holding_a_private_key_is_refused(run: Run, tmp_path: Path, secret: str) -> None:
    code, output = run("pin", "20261201T000000Z-aaaaaa", "--repo", str(tmp_path / "repo"), "--reason", secret)
    assert code == 3 and "--reason" in output and "private key" in output
    assert_no_part_of(secret, output)


def test_a_pin_reason_that_only_mentions_a_private_key_is_kept(run: Run, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    run("backup", "--repo", str(repo), "--endpoints", "127.0.0.1:1")  # creates the repository, fails after
    code, output = run("pin", "20261201T000000Z-aaaaaa", "--repo", str(repo),
                       "--reason", "before the CA private key rotation")
    assert "private key (not shown)" not in output and "looks like a private key" not in output, output
    assert code != 3, output

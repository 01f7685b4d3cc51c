"""Loading lifeboat.yaml: each bad value's message, precedence, origins, secrets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifeboat.config import (
    FlagValue,
    LifeboatConfig,
    Origin,
    load_config,
    next_run,
    resolve_config,
    shown_values,
    store_environ,
)
from lifeboat.errors import UsageError

FULL = """\
cluster: prod
root: /host
etcd:
  endpoints: [https://10.0.0.1:2379, https://10.0.0.2:2379]
  cacert: /etc/kubernetes/pki/etcd/ca.crt
  cert: /etc/kubernetes/pki/etcd/healthcheck-client.crt
  key: /etc/kubernetes/pki/etcd/healthcheck-client.key
  dial-timeout: 3s
  command-timeout: 1m
repository:
  url: s3://backups/prod
  s3:
    region: eu-west-1
    endpoint-url: https://s3.example.net
encryption:
  recipients: [age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq]
  identity-files: [/etc/lifeboat/age-key.txt]
backup:
  zstd-level: 5
  tmp-dir: /var/tmp
  capture-files: false
  labels: {env: prod}
schedules:
  backup: "*/30 * * * *"
  drill: "0 4 * * 0"
retention:
  keep-last: 7
  keep-daily: 7
  recovery-window: 7d
  min-redundancy: 2
  orphan-grace: 12h
agent:
  listen: 0.0.0.0:9847
  lease-ttl: 20s
  log-format: json
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lifeboat.yaml"
    path.write_text(text)
    return path


def test_full_example_loads_with_typed_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    assert config.cluster == "prod"
    assert config.etcd.endpoints == ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
    assert config.etcd.dial_timeout == 3.0 and config.etcd.command_timeout == 60.0
    assert config.backup.capture_files is False and config.backup.zstd_level == 5
    assert config.retention is not None
    assert config.retention.policies() == {"keep-last": 7, "keep-daily": 7, "recovery-window": "7d"}
    assert config.retention.min_redundancy == 2 and config.retention.orphan_grace == 12 * 3600
    assert config.agent.lease_ttl == 20.0 and config.agent.log_format == "json"


def test_an_ipv6_listen_address_in_brackets_loads(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "agent:\n  listen: '[::]:9847'\n")).agent.listen == "[::]:9847"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == LifeboatConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("retention:\n  keep-last: -3\n", "retention.keep-last: must be a positive integer, got -3"),
        ("retention:\n  keep-daily: seven\n", "retention.keep-daily: must be a positive integer, got 'seven'"),
        ("retention:\n  keep-within: 7x\n", "retention.keep-within: must be a whole number followed by h, d or w"),
        ("retention:\n  min-redundancy: -1\n", "retention.min-redundancy: must be a whole number of 0 or more"),
        ("retention:\n  min-redundancy: 1\n", "retention: names no policy"),
        ("retention:\n  keep-forever: 1\n", "retention.keep-forever: unknown key; expected one of keep-last"),
        ("schedules:\n  backup: '61 * * * *'\n", "schedules.backup: is not a valid cron expression"),
        ("retention:\n  keep-last: 3\n  orphan-grace: 10m\n",
         "retention.orphan-grace: 600s is shorter than the minimum of 1h"),
        ("schedules:\n  drill: '0 4 * *'\n", "schedules.drill: must be a cron expression of five fields"),
        ("etcd:\n  dial-timeout: soon\n", "etcd.dial-timeout: must be a duration such as 30s"),
        ("etcd:\n  command-timeout: -5\n", "etcd.command-timeout: must be longer than zero"),
        ("etcd:\n  endpoints: []\n", "etcd.endpoints: must name at least one endpoint"),
        ("etcd: localhost\n", "etcd: must be a mapping of keys, got 'localhost'"),
        ("backup:\n  zstd-level: 22\n", "backup.zstd-level: must be an integer from 1 to 19, got 22"),
        ("backup:\n  capture-files: maybe\n", "backup.capture-files: must be true or false"),
        ("agent:\n  log-format: xml\n", "agent.log-format: must be one of 'json' or 'text', got 'xml'"),
        ("agent:\n  listen: 9847\n", "agent.listen: must be a string"),
        ("agent:\n  listen: localhost\n", "agent.listen: must be HOST:PORT"),
        ("agent:\n  listen: '127.0.0.1:\u0663\u0663'\n", "agent.listen: must be HOST:PORT"),
        ("agent:\n  listen: '::1:9847'\n", "agent.listen: must be HOST:PORT ([ADDRESS]:PORT for IPv6)"),
        ("agent:\n  lease-ttl: 1s\n", "agent.lease-ttl: must be at least 2s"),
        ("agent:\n  lease_ttl: 5\n", "agent.lease_ttl: unknown key; did you mean lease-ttl?"),
        ("cluster: Prod\n", "cluster: must be 1-63 lowercase letters"),
        ("root: host\n", "root: must be an absolute path such as /host, got 'host'"),
        ("root: ../host\n", "root: must be an absolute path such as /host, got '../host'"),
        ("colour: blue\n", "colour: unknown key; expected one of cluster, root, etcd"),
        ("repository:\n  s3:\n    access-key-id-file: /k\n",
         "repository.s3: set both access-key-id-file and secret-access-key-file"),
        ("encryption:\n  recipients: age1abc\n", "encryption.recipients: must be a list"),
    ],
)
def test_bad_value_is_refused_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: {message}"), str(caught.value)


def test_secret_in_the_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = write(tmp_path, "repository:\n  s3:\n    secret-access-key: hunter2-very-secret\n")
    with pytest.raises(UsageError) as caught:
        load_config(path)
    assert "repository.s3.secret-access-key: unknown key: secrets are never read" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "retention:\n  keep-last: 0\nagent:\n  log-format: xml\n")
    with pytest.raises(UsageError) as caught:
        load_config(path)
    assert "retention.keep-last" in str(caught.value) and "agent.log-format" in str(caught.value)


def test_duplicate_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "retention:\n  keep-last: 7\n  keep-last: 2\n")
    with pytest.raises(UsageError, match=r"not valid YAML at line 3.*'keep-last' is given twice"):
        load_config(path)


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "etcd:\n  endpoints: [a, b\n")
    with pytest.raises(UsageError, match=rf"^{path}: not valid YAML at line \d+"):
        load_config(path)


def test_top_level_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="must be a mapping of keys"):
        load_config(write(tmp_path, "- cluster: prod\n"))


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read config file .*No such file"):
        load_config(tmp_path / "absent.yaml")


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "cluster: from-file\nrepository:\n  url: /file\netcd:\n  dial-timeout: 3\n"
                           "backup:\n  zstd-level: 5\n")
    environ = {"LIFEBOAT_REPO": "/env", "LIFEBOAT_CLUSTER": "from-env", "ETCDCTL_DIAL_TIMEOUT": ""}
    flags = {"cluster": FlagValue("--cluster", "from-flag")}
    resolved = resolve_config(path, environ, flags)
    config = resolved.config
    assert config.cluster == "from-flag"
    assert resolved.origin("cluster") == Origin("flag", "--cluster")
    assert config.repository.url == "/env"
    assert resolved.origin("repository.url") == Origin("env", "$LIFEBOAT_REPO")
    assert config.etcd.dial_timeout == 3.0  # an empty variable does not count
    assert resolved.origin("etcd.dial-timeout") == Origin("file", str(path))
    assert config.etcd.command_timeout == 10.0
    assert resolved.origin("etcd.command-timeout") == Origin("default")
    assert not resolved.is_set("etcd.command-timeout") and resolved.is_set("backup.zstd-level")


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(UsageError) as caught:
        resolve_config(None, {"ETCDCTL_DIAL_TIMEOUT": "abc"})
    assert str(caught.value) == (
        "$ETCDCTL_DIAL_TIMEOUT (etcd.dial-timeout): must be a duration such as 30s, 5m or 1h, got 'abc'"
    )


def test_a_relative_root_in_the_environment_is_refused_naming_the_variable() -> None:
    with pytest.raises(UsageError, match=r"^\$LIFEBOAT_ROOT \(root\): must be an absolute path such as /host, got 'host'$"):
        resolve_config(None, {"LIFEBOAT_ROOT": "host"})


# Every key that names a file or directory on the host, as a relative path: each was taken
# relative to whatever directory the command ran in (the agent's is /), like root was.
RELATIVE_PATHS = [
    ("etcd:\n  cacert: pki/ca.crt\n", "etcd.cacert: must be an absolute path such as /etc/kubernetes/pki/etcd/ca.crt, got 'pki/ca.crt'"),
    ("etcd:\n  cert: client.crt\n", "etcd.cert: must be an absolute path such as /etc/kubernetes/pki/etcd/healthcheck-client.crt, got 'client.crt'"),
    ("etcd:\n  key: ./client.key\n", "etcd.key: must be an absolute path such as /etc/kubernetes/pki/etcd/healthcheck-client.key, got './client.key'"),
    ("repository:\n  url: backups\n", "repository.url: must be a URL such as s3://bucket/prefix or file:///var/backups/lifeboat, "
     "or an absolute directory path, got 'backups'"),
    ("repository:\n  s3:\n    access-key-id-file: s3/id\n    secret-access-key-file: /s3/key\n",
     "repository.s3.access-key-id-file: must be an absolute path such as /etc/lifeboat/s3/access-key-id, got a relative path (not shown)"),
    ("repository:\n  s3:\n    access-key-id-file: /s3/id\n    secret-access-key-file: s3/key\n",
     "repository.s3.secret-access-key-file: must be an absolute path such as /etc/lifeboat/s3/secret-access-key, got a relative path (not shown)"),
    ("repository:\n  s3:\n    session-token-file: token\n",
     "repository.s3.session-token-file: must be an absolute path such as /etc/lifeboat/s3/session-token, got a relative path (not shown)"),
    ("encryption:\n  recipients: [recipients.txt]\n", "encryption.recipients[0]: must be an age recipient (age1...), an SSH public key "
     "or the absolute path of a recipients file such as /etc/lifeboat/recipients.txt, got 'recipients.txt'"),
    ("encryption:\n  identity-files: [/etc/a.txt, age-key.txt]\n",
     "encryption.identity-files[1]: must be an absolute path such as /etc/lifeboat/age-key.txt, got 'age-key.txt'"),
    ("backup:\n  tmp-dir: tmp\n", "backup.tmp-dir: must be an absolute path such as /var/tmp, got 'tmp'"),
    ("capture:\n  spool-dir: spool\n", "capture.spool-dir: must be an absolute path such as /var/lib/lifeboat/capture-spool, got 'spool'"),
    ("root: ''\n", "root: must be an absolute path such as /host, got an empty value"),
    ("backup:\n  tmp-dir: ''\n", "backup.tmp-dir: must be an absolute path such as /var/tmp, got an empty value"),
]


@pytest.mark.parametrize(("text", "message"), RELATIVE_PATHS)
def test_a_relative_or_empty_path_in_the_file_is_refused_naming_the_file_and_key(
    tmp_path: Path, text: str, message: str,
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: {message}"


def test_a_relative_key_file_is_not_repeated_it_may_be_the_key_itself(tmp_path: Path) -> None:
    path = write(tmp_path, "repository:\n  s3:\n    access-key-id-file: AKIAIOSFODNN7EXAMPLE\n"
                           "    secret-access-key-file: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n")
    with pytest.raises(UsageError) as caught:
        load_config(path)
    assert "AKIA" not in str(caught.value) and "wJalr" not in str(caught.value)


def test_absolute_paths_and_inline_recipients_are_accepted(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "repository: {url: /var/backups/lifeboat}\n"
                                         "encryption: {recipients: [/etc/r.txt, 'ssh-ed25519 AAAA x']}\n"))
    assert config.repository.url == "/var/backups/lifeboat"
    assert config.encryption.recipients == ["/etc/r.txt", "ssh-ed25519 AAAA x"]


@pytest.mark.parametrize(("variable", "key", "example"), [
    ("ETCDCTL_CACERT", "etcd.cacert", "/etc/kubernetes/pki/etcd/ca.crt"),
    ("ETCDCTL_CERT", "etcd.cert", "/etc/kubernetes/pki/etcd/healthcheck-client.crt"),
    ("ETCDCTL_KEY", "etcd.key", "/etc/kubernetes/pki/etcd/healthcheck-client.key"),
])
def test_a_relative_certificate_path_in_the_environment_is_refused_naming_the_variable(
    variable: str, key: str, example: str,
) -> None:
    with pytest.raises(UsageError) as caught:
        resolve_config(None, {variable: "pki/x.pem"})
    assert str(caught.value) == f"${variable} ({key}): must be an absolute path such as {example}, got 'pki/x.pem'"


def test_a_relative_repository_directory_in_the_environment_is_refused() -> None:
    with pytest.raises(UsageError, match=r"^\$LIFEBOAT_REPO \(repository.url\): must be a URL such as .*got '../repo'$"):
        resolve_config(None, {"LIFEBOAT_REPO": "../repo"})


def test_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(UsageError, match=r"^--zstd-level: must be an integer from 1 to 19, got 30$"):
        resolve_config(None, {}, {"backup.zstd-level": FlagValue("--zstd-level", 30)})


def test_endpoints_from_environment_are_split_on_commas() -> None:
    resolved = resolve_config(None, {"ETCDCTL_ENDPOINTS": "https://a:2379, https://b:2379"})
    assert resolved.config.etcd.endpoints == ["https://a:2379", "https://b:2379"]


def test_show_never_prints_secret_values(tmp_path: Path) -> None:
    key_file, secret_file = tmp_path / "id", tmp_path / "secret"
    key_file.write_text("key-id-from-file\n")
    secret_file.write_text("hunter2-from-file\n")
    path = write(tmp_path, f"repository:\n  url: s3://b/p\n  s3:\n    access-key-id-file: {key_file}\n"
                           f"    secret-access-key-file: {secret_file}\n")
    for environ in ({}, {"AWS_ACCESS_KEY_ID": "key-id-from-env", "AWS_SECRET_ACCESS_KEY": "hunter2-env"}):
        rows = shown_values(resolve_config(path, environ), environ)
        text = repr(rows)
        assert "hunter2" not in text and "key-id-from" not in text
        credentials = next(r for r in rows if r.key == "repository.s3.credentials")
        assert "values hidden" in credentials.value


def test_show_masks_credentials_in_a_repository_url() -> None:
    rows = shown_values(resolve_config(None, {"LIFEBOAT_REPO": "s3://user:pw@bucket/p"}), {})
    assert next(r for r in rows if r.key == "repository.url").value == "s3://***@bucket/p"


def test_key_files_become_aws_variables_unless_the_environment_sets_keys(tmp_path: Path) -> None:
    (tmp_path / "id").write_text("AKIDFROMFILE\n")
    (tmp_path / "secret").write_text("SECRETFROMFILE\n")
    path = write(tmp_path, f"repository:\n  s3:\n    region: eu-west-1\n    access-key-id-file: {tmp_path}/id\n"
                           f"    secret-access-key-file: {tmp_path}/secret\n")
    config = load_config(path)
    env = store_environ(config, {})
    assert env["AWS_ACCESS_KEY_ID"] == "AKIDFROMFILE" and env["AWS_SECRET_ACCESS_KEY"] == "SECRETFROMFILE"
    assert env["AWS_REGION"] == "eu-west-1"
    assert store_environ(config, {"AWS_ACCESS_KEY_ID": "E", "AWS_SECRET_ACCESS_KEY": "S"})["AWS_ACCESS_KEY_ID"] == "E"


def test_unreadable_key_file_names_the_key_not_the_content(tmp_path: Path) -> None:
    path = write(tmp_path, f"repository:\n  s3:\n    access-key-id-file: {tmp_path}/none\n"
                           f"    secret-access-key-file: {tmp_path}/none2\n")
    with pytest.raises(UsageError, match=r"^cannot read repository.s3.access-key-id-file .*/none: No such file"):
        store_environ(load_config(path), {})


def test_next_run_follows_the_cron_expression_in_utc() -> None:
    now = datetime(2026, 11, 22, 3, 14, 59, tzinfo=UTC)
    assert next_run("*/30 * * * *", now) == datetime(2026, 11, 22, 3, 30, tzinfo=UTC)
    # 2026-11-22 is a Sunday: the weekly drill runs later the same day.
    assert next_run("0 4 * * 0", now) == datetime(2026, 11, 22, 4, 0, tzinfo=UTC)
    assert next_run("0 4 * * 0", now.replace(hour=4)) == datetime(2026, 11, 29, 4, 0, tzinfo=UTC)


def test_the_documented_example_loads(tmp_path: Path) -> None:
    doc = Path(__file__).parents[3] / "docs" / "configuration.md"
    text = doc.read_text()
    example = text.split("## A full example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    config = load_config(write(tmp_path, example))
    assert config.cluster == "prod" and config.retention is not None
    assert config.retention.policies() == {"keep-last": 12, "keep-daily": 7, "keep-weekly": 4, "keep-monthly": 6}
    assert config.schedules.backup == "*/30 * * * *" and config.agent.log_format == "json"

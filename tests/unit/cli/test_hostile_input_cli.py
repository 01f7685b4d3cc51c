"""Hostile or broken input is refused at once: one line, exit 3, nothing echoed that should not be."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifeboat.catalog.repository import BackupRepository
from lifeboat.store import open_store
from tests.support.cli import Cli
from tests.support.manifests import fake_backup
from tests.unit.retention.test_prune import store_backup


@pytest.mark.parametrize("endpoint", ["not a url", "s3.example.com", "http://", "http://h:99999",
                                      "ftp://h"])
def test_endpoint_that_is_not_a_url_is_a_usage_error(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    code, out, err = cli("list", "--repo", "s3://bucket/prefix")
    assert code == 3
    assert err.count("\n") == 1 and "AWS_ENDPOINT_URL" in err and "Traceback" not in err


@pytest.mark.parametrize("port", ["", ":abc", ":99999"])
def test_endpoint_with_credentials_is_refused_without_echoing_them(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, port: str
) -> None:
    # With a port that is no port, the URL was taken for malformed and quoted whole, password included.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"https://AKIAEXAMPLE:s3cr3tpassw0rd@s3.example.com{port}")
    code, _out, err = cli("list", "--repo", "s3://bucket/prefix")
    assert code == 3 and "s3cr3tpassw0rd" not in err and "credentials" in err


def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        this, prev = chr(ord("a") + i), chr(ord("a") + i - 1)
        lines.append(f"{this}: &{this} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("command", [["config", "validate"], ["list", "--repo", "/nonexistent", "--config"]])
def test_yaml_alias_bomb_is_refused_at_once(cli: Cli, tmp_path: Path, command: list[str]) -> None:
    bomb = tmp_path / "lifeboat.yaml"
    bomb.write_text(billion_laughs())
    assert bomb.stat().st_size < 400
    started = time.monotonic()
    code, _out, err = cli(*command, str(bomb))
    assert code == 3 and "aliases" in err and err.count("\n") == 1
    assert time.monotonic() - started < 5


def test_config_file_over_one_mib_is_refused_without_reading_it_all(cli: Cli, tmp_path: Path) -> None:
    big = tmp_path / "lifeboat.yaml"
    big.write_text("# padding\n" * 200_000)  # 2 MB of comments
    code, _out, err = cli("config", "validate", str(big))
    assert code == 3 and "larger than 1 MiB" in err


def test_anchors_without_aliases_and_ordinary_configs_still_load(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "lifeboat.yaml"
    config.write_text("cluster: &name prod\n")
    code, _out, err = cli("config", "validate", str(config))
    assert code == 0, err


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_restore_into_a_data_dir_whose_parent_is_missing_names_the_parent(
    cli: Cli, tmp_path: Path, dry_run: list[str]
) -> None:
    missing = tmp_path / "no-such-dir"
    code, _out, err = cli("restore", "latest", "--repo", str(tmp_path / "repo"), "--root", str(tmp_path),
                          "--supervisor", "none", "--name", "m0", "--initial-cluster", "m0=http://127.0.0.1:2380",
                          "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                          "--data-dir", "/no-such-dir/etcd", *dry_run)  # under --root
    assert code == 3, err
    assert err.count("\n") == 1 and f"parent directory {missing} does not exist" in err
    assert "lock" not in err and not missing.exists()


@pytest.mark.parametrize("text", ["evil\n\x1b[31mRED", "a\rline", "right\u202eto left", "x" * 1001])
def test_a_pin_reason_a_terminal_would_act_on_or_too_long_is_refused_unstored(
        cli: Cli, tmp_path: Path, text: str) -> None:
    """`show` and `list` print a pin's reason: an escape sequence or a newline there would act on
    (or forge lines in) the terminal of whoever lists the backups."""
    code, out, err = cli("pin", "20261201T000000Z-aaaaaa", "--repo", str(tmp_path / "repo"), "--reason", text)
    assert code == 3 and out == "" and err.count("\n") == 1 and "--reason" in err
    assert "\x1b" not in err and "\u202e" not in err and not (tmp_path / "repo").exists()


@pytest.mark.parametrize("label", ["k=x\ny", "k=\x1b]0;title\x07", "k\x1b=v", "k=" + "v" * 257])
def test_a_label_a_terminal_would_act_on_or_too_long_is_refused(cli: Cli, tmp_path: Path, label: str) -> None:
    code, _out, err = cli("backup", "--repo", str(tmp_path / "repo"), "--endpoints", "127.0.0.1:1", "--label", label)
    assert code == 3 and err.count("\n") == 1 and "label" in err and "\x1b" not in err and "\x07" not in err


@pytest.mark.parametrize("label", ["k=caf\udce9", "k\udcff=v"])
def test_a_label_that_is_not_utf8_is_refused_before_a_backup_commits_a_manifest_nobody_can_read(
        cli: Cli, tmp_path: Path, label: str) -> None:
    """A shell passes `--label k=$'\\xe9'` (Latin-1) as a byte that is no UTF-8: the backup said it
    committed, and every later list, verify and restore found its manifest damaged."""
    code, _out, err = cli("backup", "--repo", str(tmp_path / "repo"), "--endpoints", "127.0.0.1:1", "--label", label)
    assert code == 3 and err.count("\n") == 1 and "label" in err and "not UTF-8" in err
    assert not (tmp_path / "repo").exists()


def test_a_pin_reason_that_is_not_utf8_is_refused_unstored(cli: Cli, tmp_path: Path) -> None:
    code, out, err = cli("pin", "20261201T000000Z-aaaaaa", "--repo", str(tmp_path / "repo"), "--reason", "caf\udce9")
    assert code == 3 and out == "" and err.count("\n") == 1 and "--reason" in err and "not UTF-8" in err


@pytest.mark.parametrize("label", ["lifeboat.tick=2026-12-04T19:00:00+00:00",
                                   "lifeboat.synthetic-seen=2020-01-01T00:00:00Z"])
def test_a_label_named_as_lifeboats_own_is_refused(cli: Cli, tmp_path: Path, label: str) -> None:
    """`--label lifeboat.tick=...` made the agent take that tick as done and skip its backup;
    `--label lifeboat.synthetic-seen=2020-...` dated a plain backup six years back, for retention
    and for --to-time restores."""
    code, _out, err = cli("backup", "--repo", str(tmp_path / "repo"), "--endpoints", "127.0.0.1:1", "--label", label)
    assert code == 3 and "are lifeboat's own" in err and not (tmp_path / "repo").exists()


HOSTILE = "evil\n\x1b[2J\x1b]0;title\x07forged\u202eline"


def test_text_read_from_a_repository_is_printed_with_its_control_characters_escaped(
        cli: Cli, tmp_path: Path) -> None:
    """A pin written before reasons were checked (or by hand, or by a hostile writer), and a
    backup id on the command line, are printed by `show`, `list` and errors: an escape sequence
    there acted on the terminal of whoever looked, a newline forged a line."""
    from lifeboat.catalog.pins import Pin
    from lifeboat.catalog.repository import BackupRepository
    from lifeboat.store import open_store
    from tests.unit.cli.test_saved_snapshot import backup_in

    m = backup_in(tmp_path / "repo")
    repo = BackupRepository.open(open_store(str(tmp_path / "repo")))
    repo.pin(m, Pin("2026-12-01T00:00:00Z", HOSTILE, HOSTILE))
    for command in (("show", m.id), ("list",), ("list", "--check"), ("show", HOSTILE)):
        code, out, err = cli(*command, "--repo", str(tmp_path / "repo"), "--cluster", m.cluster)
        for stream in (out, err):
            assert not any(c in stream for c in "\x1b\x07\u202e"), (command, stream)
            assert "forged" not in stream or "\\x1b]0;title\\x07forged\\u202eline" in stream, (command, stream)
        assert "\nforged" not in out + err and "\n\x1b" not in out + err
    assert "\\x0a\\x1b[2J" in cli("show", m.id, "--repo", str(tmp_path / "repo"), "--cluster", m.cluster)[1]


def test_log_messages_are_printed_with_their_control_characters_escaped() -> None:
    import logging

    from lifeboat.cli.output import PrintableFormatter

    record = logging.LogRecord("lifeboat", logging.WARNING, __file__, 1, "segment %s is damaged", (HOSTILE,), None)
    line = PrintableFormatter("lifeboat: %(message)s").format(record)
    assert line.count("\n") == 0 and "\x1b" not in line and line.startswith("lifeboat: segment evil\\x0a\\x1b[2J")


def test_delete_refuses_latest_which_names_no_backup_in_particular(cli: Cli, tmp_path: Path) -> None:
    """`delete latest --yes` deleted the newest backup: not documented, and what it names
    changes with every backup (an agent's backup a second earlier makes it another one)."""
    from tests.unit.cli.test_saved_snapshot import backup_in

    m = backup_in(tmp_path / "repo")
    code, out, err = cli("delete", "latest", "--yes", "--repo", str(tmp_path / "repo"), "--cluster", m.cluster)
    assert (code, out) == (3, "") and "not 'latest'" in err
    assert cli("show", m.id, "--repo", str(tmp_path / "repo"), "--cluster", m.cluster)[0] == 0


def test_object_names_read_from_a_snapshot_are_printed_with_their_control_characters_escaped(
        cli: Cli, tmp_path: Path) -> None:
    """A configmap named with an escape sequence (written straight into etcd) reached the
    terminal of whoever listed the objects: `k8s ls` and `k8s get` printed it raw."""
    from lifeboat.snapshot.replay import encode_fields
    from tests.unit.snapshot.test_latest_rows import db_with, row_key

    key = b"/registry/configmaps/team-a/ev\x1b[31mil"
    value = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"ev\\u001b[31mil","namespace":"team-a"}}'
    snapshot = db_with(tmp_path / "snap.db", [(row_key(2), encode_fields(key, 2, 2, 1, value, 0))])
    for command in (("k8s", "ls", str(snapshot), "-n", "team-a"),
                    ("k8s", "get", str(snapshot), "configmap/ev\x1b[31mil", "-n", "team-a")):
        code, out, err = cli(*command)
        assert code == 0, err
        assert "\x1b" not in out + err and "ev\\x1b[31mil" in out, out


@pytest.mark.parametrize("command", [["snapshot", "status"], ["snapshot", "check"]])
def test_a_snapshot_file_that_is_not_there_is_a_usage_error_like_a_directory(
    cli: Cli, tmp_path: Path, command: list[str]
) -> None:
    # A directory given instead of a file was exit 3, a path with nothing there exit 1.
    missing = tmp_path / "snap.db"
    code, out, err = cli(*command, str(missing))
    assert code == 3, err
    assert err == f"lifeboat: error: snapshot file {missing} does not exist; check the path\n" and out == ""
    code, _out, err = cli(*command, str(tmp_path))
    assert code == 3 and "not a regular file" in err


@pytest.mark.parametrize("command", [["k8s", "ls", "secrets/s1"], ["k8s", "get", "secrets/s1", "secrets/s1"],
                                     ["verify", "secrets/s1", "--drill"]])
def test_a_point_from_a_source_that_is_no_backup_id_says_so(cli: Cli, tmp_path: Path, command: list[str]) -> None:
    """With --to-revision, a SOURCE given in the wrong place (`k8s get secrets/s1 ...`) was
    reported as a base backup that "is no longer a complete backup in the repository"."""
    from tests.unit.cli.test_saved_snapshot import backup_in

    m = backup_in(tmp_path / "repo")
    code, out, err = cli(*command, "--to-revision", "10", "--repo", str(tmp_path / "repo"), "--cluster", m.cluster)
    assert (code, out) == (3, "") and "'secrets/s1' is not a backup id" in err, err


@pytest.mark.parametrize("root", [False, True])
@pytest.mark.parametrize("data_dir", ["/", "/var/lib/etcd/.."])
@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_restore_into_a_data_dir_that_is_a_filesystems_or_the_hosts_root_is_refused(
    cli: Cli, tmp_path: Path, data_dir: str, root: bool, dry_run: list[str]
) -> None:
    """--data-dir / crashed (exit 4, "PosixPath('/') has an empty name"); under --root it named the
    host root itself, which a restore would have moved aside."""
    (tmp_path / "var/lib/etcd/member").mkdir(parents=True)
    if not root and data_dir != "/":
        data_dir = f"{tmp_path}{data_dir}"  # never a path of this machine's own
    code, _out, err = cli("restore", "latest", "--repo", str(tmp_path / "repo"),
                          *(["--root", str(tmp_path)] if root else []),
                          "--supervisor", "none", "--name", "m0", "--initial-cluster", "m0=http://127.0.0.1:2380",
                          "--initial-advertise-peer-urls", "http://127.0.0.1:2380", "--data-dir", data_dir, *dry_run)
    assert code == 3, err
    assert err.count("\n") == 1 and "a directory of its own" in err, err
    assert not list(tmp_path.parent.glob(f"{tmp_path.name}.lifeboat-*"))
    assert not list((tmp_path / "var/lib").glob("*lifeboat-*"))


@pytest.mark.parametrize(("shape", "refusal"), [("file", "is not a directory"), ("not-etcd", "holds no member/"),
                                                ("symlink", "is not a directory")])
def test_a_dry_run_refuses_the_data_dir_the_restore_would_refuse_at_preflight(
    cli: Cli, tmp_path: Path, shape: str, refusal: str
) -> None:
    """--dry-run printed a plan and exit 0 for a data dir that is a file, a symlink or not etcd's:
    the restore itself then refused it at its first step."""
    url = str(tmp_path / "repo")
    store_backup(BackupRepository.open(open_store(url), create=True), datetime(2026, 11, 22, 3, 0, tzinfo=UTC))
    data_dir = tmp_path / "etcd"
    if shape == "file":
        data_dir.write_text("not a directory")
    elif shape == "not-etcd":
        (data_dir / "important").mkdir(parents=True)
    else:
        (tmp_path / "elsewhere/member").mkdir(parents=True)
        data_dir.symlink_to(tmp_path / "elsewhere")
    code, out, err = cli("restore", "latest", "--dry-run", "--force", "--repo", url, "--supervisor", "none",
                         "--name", "m0", "--initial-cluster", "m0=http://127.0.0.1:2380", "--data-dir", str(data_dir))
    assert code == 3, out + err
    assert err.count("\n") == 1 and refusal in err and "(dry run" not in out


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_restore_into_a_data_dir_spelled_with_dot_dot_is_refused(cli: Cli, tmp_path: Path, dry_run: list[str]) -> None:
    """'/var/lib/../lib/etcd' is /var/lib/etcd to the kernel (unless a symlink makes it another) but
    not to the journal, which names the data dir as given: a finished restore asked for again so
    spelled was not recognised, and went on as a new restore of "another cluster's" backup."""
    (tmp_path / "var/lib/etcd/member").mkdir(parents=True)
    code, _out, err = cli("restore", "latest", "--repo", str(tmp_path / "repo"), "--supervisor", "none",
                          "--name", "m0", "--initial-cluster", "m0=http://127.0.0.1:2380",
                          "--data-dir", f"{tmp_path}/var/lib/../lib/etcd", *dry_run)
    assert code == 3, err
    assert err.count("\n") == 1 and "'..'" in err, err
    assert not list((tmp_path / "var/lib").glob("*lifeboat-*"))


# A YAML document nested a few thousand levels deep (a few KiB of brackets) took PyYAML's
# recursive composer past Python's recursion limit, and a key that is a list or a mapping met
# the duplicate-key check's set: each was "unexpected error ... a bug" (exit 4).
NESTED = "[" * 20_000 + "]" * 20_000


def deep_config(tmp_path: Path) -> list[str]:
    (tmp_path / "lifeboat.yaml").write_text(f"backup:\n  labels:\n    a: {NESTED}\n")
    return ["config", "validate", str(tmp_path / "lifeboat.yaml")]


def deep_encryption_config(tmp_path: Path) -> list[str]:
    (tmp_path / "encryption.yaml").write_text(f"kind: EncryptionConfiguration\nresources: {NESTED}\n")
    return ["k8s", "ls", str(tmp_path / "snapshot.db"), "--encryption-config", str(tmp_path / "encryption.yaml")]


def deep_static_pod(tmp_path: Path) -> list[str]:
    manifests = tmp_path / "etc" / "kubernetes" / "manifests"
    manifests.mkdir(parents=True)
    (manifests / "etcd.yaml").write_text(f"kind: Pod\nspec: {NESTED}\n")
    return ["status", "--root", str(tmp_path)]


@pytest.mark.parametrize("command", [deep_config, deep_encryption_config, deep_static_pod],
                         ids=["config file", "encryption configuration", "static-pod manifest"])
def test_yaml_nested_thousands_deep_is_refused_as_bad_yaml(cli: Cli, tmp_path: Path, command: object) -> None:
    code, _out, err = cli(*command(tmp_path))  # type: ignore[operator]
    assert code == 3, err
    assert err.count("\n") == 1 and "nested" in err and "unexpected" not in err


@pytest.mark.parametrize("document", ["? [a, b]\n: c\n", "retention:\n  ? {keep-last: 1}\n  : 3\n",
                                      "backup:\n  labels:\n    ? [a]\n    : b\n"])
def test_a_yaml_key_that_is_a_list_or_a_mapping_is_refused_naming_the_line(
        cli: Cli, tmp_path: Path, document: str) -> None:
    config = tmp_path / "lifeboat.yaml"
    config.write_text(document)
    code, _out, err = cli("config", "validate", str(config))
    assert code == 3, err
    assert err.count("\n") == 1 and "not valid YAML at line" in err and "unexpected" not in err


@pytest.mark.parametrize("output", ["table", "yaml", "json"])
def test_get_of_a_json_object_nested_hundreds_deep_names_it_without_crashing(
        cli: Cli, tmp_path: Path, output: str) -> None:
    """A custom resource nested 500 levels deep (kube-apiserver accepts 10,000) made `k8s get`
    (table and YAML) fail with RecursionError, exit 4, after printing half the document."""
    from lifeboat.snapshot.replay import encode_fields
    from tests.unit.snapshot.test_latest_rows import db_with, row_key

    key = b"/registry/example.com/widgets/team-a/deep"
    value = (b'{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"deep","namespace":"team-a"},'
             b'"spec":' + b'{"x":' * 500 + b'1' + b'}' * 501)
    snapshot = db_with(tmp_path / "snap.db", [(row_key(2), encode_fields(key, 2, 2, 1, value, 0))])
    code, out, err = cli("k8s", "get", str(snapshot), "widgets.example.com/deep", "-n", "team-a", "-o", output)
    assert (code, err) == (0, "")
    assert "nested more than 100 levels deep" in out


def test_get_finds_a_key_that_is_not_utf8_by_the_bytes_the_command_line_gave(cli: Cli, tmp_path: Path) -> None:
    """`k8s get SOURCE /registry/...\\xff` (a key `k8s ls` listed) failed with UnicodeEncodeError,
    exit 4: the argument's escaped bytes were encoded as UTF-8."""
    import os

    from lifeboat.snapshot.replay import encode_fields
    from tests.unit.snapshot.test_latest_rows import db_with, row_key

    key = b"/registry/configmaps/team-a/odd-\xff\xfe"
    value = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"odd","namespace":"team-a"}}'
    snapshot = db_with(tmp_path / "snap.db", [(row_key(2), encode_fields(key, 2, 2, 1, value, 0))])
    doc = cli.json("k8s", "get", str(snapshot), os.fsdecode(key))
    assert doc["object"]["metadata"]["name"] == "odd"


def test_history_matches_a_key_that_is_not_utf8_by_the_bytes_the_command_line_gave() -> None:
    """`k8s history /registry/...\\xff` failed with UnicodeEncodeError, exit 4."""
    from lifeboat.cli.k8s_history import object_matcher

    matches = object_matcher("/registry/configmaps/team-a/odd-\udcff", None, None)
    assert matches(b"/registry/configmaps/team-a/odd-\xff", b"") and not matches(b"/registry/configmaps/team-a/odd-", b"")


def test_get_as_yaml_escapes_direction_overrides_and_keeps_the_text(cli: Cli, tmp_path: Path) -> None:
    """`k8s get -o yaml` wrote a direction override (U+202E) of an annotation as it is: a terminal
    showing the YAML displayed the text reversed (tables and JSON escape it)."""
    import yaml

    from lifeboat.snapshot.replay import encode_fields
    from tests.unit.snapshot.test_latest_rows import db_with, row_key

    key = b"/registry/configmaps/team-a/c"
    value = (b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","namespace":"team-a",'
             b'"annotations":{"note":"invoice\\u202egnp.exe caf\\u00e9"}}}')
    snapshot = db_with(tmp_path / "snap.db", [(row_key(2), encode_fields(key, 2, 2, 1, value, 0))])
    code, out, err = cli("k8s", "get", str(snapshot), "configmap/c", "-n", "team-a", "-o", "yaml")
    assert code == 0, err
    assert "\u202e" not in out
    assert yaml.safe_load(out)["object"]["metadata"]["annotations"]["note"] == "invoice\u202egnp.exe caf\u00e9"


@contextmanager
def unwritable(directory: Path) -> Iterator[str]:
    """``directory`` made unwritable for this process: a read-only bind mount as root (root ignores
    permission bits), mode 0555 otherwise. Yields what the refusal says."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield "is not writable by uid"
        finally:
            directory.chmod(0o755)
        return
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True)
        yield "is on a read-only filesystem"
    finally:
        subprocess.run(["umount", str(directory)], check=True)


@pytest.mark.parametrize("dry_run", [["--dry-run"], []])
def test_a_dry_run_refuses_a_data_dir_whose_parent_cannot_be_written(cli: Cli, tmp_path: Path, dry_run: list[str]) -> None:
    """--dry-run said OK (it takes no lock) for a data dir on a read-only filesystem; the restore
    then stopped at the lock."""
    url = str(tmp_path / "repo")
    store_backup(BackupRepository.open(open_store(url), create=True), datetime(2026, 11, 22, 3, 0, tzinfo=UTC))
    parent = tmp_path / "var-lib"
    (parent / "etcd/member").mkdir(parents=True)
    with unwritable(parent) as refusal:
        code, out, err = cli("restore", "latest", "--force", "--repo", url, "--supervisor", "none",
                             "--name", "m0", "--initial-cluster", "m0=http://127.0.0.1:2380",
                             "--data-dir", str(parent / "etcd"), *dry_run)
    assert code == 3, out + err
    assert err.count("\n") == 1 and f"its parent directory {parent} {refusal}" in err, err
    assert sorted(p.name for p in parent.iterdir()) == ["etcd"]


def test_a_data_dir_spelled_with_a_leading_double_slash_is_the_same_data_dir(cli: Cli, tmp_path: Path) -> None:
    """'--data-dir //srv/etcd' crashed (exit 4: "is not in the subpath of '/'")."""
    url = str(tmp_path / "repo")
    store_backup(BackupRepository.open(open_store(url), create=True), datetime(2026, 11, 22, 3, 0, tzinfo=UTC))
    (tmp_path / "etcd/member").mkdir(parents=True)
    code, out, err = cli("restore", "latest", "--dry-run", "--force", "-o", "json", "--repo", url,
                         "--supervisor", "none", "--name", "m0", "--initial-cluster", "m0=http://127.0.0.1:2380",
                         "--data-dir", f"/{tmp_path}/./etcd/")
    assert code == 0, out + err
    assert json.loads(out)["data_dir"] == str(tmp_path / "etcd")


@pytest.mark.parametrize("dry_run", [["--dry-run"], []])
def test_a_data_dir_named_too_long_for_the_names_lifeboat_makes_beside_it_is_refused_up_front(
    cli: Cli, tmp_path: Path, dry_run: list[str]
) -> None:
    """A data dir whose name fits but leaves no room for '.lifeboat-restored-<stamp>' and the like:
    with 240 bytes the journal could not be named ("unreadable ... move it away"); with 225 the journal
    could, and the restore went on until a name made after etcd was stopped was too long."""
    url = str(tmp_path / "repo")
    store_backup(BackupRepository.open(open_store(url), create=True), datetime(2026, 11, 22, 3, 0, tzinfo=UTC))
    parent = tmp_path / "lib"
    for length in (225, 240):
        (parent / ("e" * length) / "member").mkdir(parents=True)
        code, out, err = cli("restore", "latest", "--force", "--no-start", "--repo", url, "--supervisor", "none",
                             "--name", "m0", "--initial-cluster", "m0=http://127.0.0.1:2380",
                             "--data-dir", str(parent / ("e" * length)), *dry_run)
        assert code == 3, out + err
        assert err.count("\n") == 1 and "is too long" in err and "shorter name" in err, err
        assert sorted(p.name for p in parent.iterdir()) == ["e" * n for n in (225, 240) if n <= length]


def test_a_data_dir_whose_parent_path_cannot_be_looked_at_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    """A path component longer than a name may be crashed the restore (exit 4, ENAMETOOLONG)."""
    code, _out, err = cli("restore", "latest", "--dry-run", "--repo", str(tmp_path / "repo"), "--supervisor", "none",
                          "--name", "m0", "--initial-cluster", "m0=http://127.0.0.1:2380",
                          "--data-dir", f"{tmp_path}/{'a' * 300}/etcd")
    assert code == 3, err
    assert err.count("\n") == 1 and "File name too long" in err, err


def test_an_empty_data_dir_is_restored_into(cli: Cli, tmp_path: Path) -> None:
    """An empty data dir (a distro package makes one; the old wiki's 'rm -rf /var/lib/etcd/member'
    leaves one) was refused as "not an etcd data dir", with no way on but removing it by hand.
    It is moved aside like any data dir (a real restore into one: test_restore_no_start)."""
    url = str(tmp_path / "repo")
    store_backup(BackupRepository.open(open_store(url), create=True), datetime(2026, 11, 22, 3, 0, tzinfo=UTC))
    data_dir = tmp_path / "lib/etcd"
    data_dir.mkdir(parents=True)
    code, out, err = cli("restore", "latest", "--dry-run", "--no-start", "-o", "json", "--repo", url,
                         "--supervisor", "none", "--name", "m0", "--initial-cluster", "m0=http://127.0.0.1:2380",
                         "--data-dir", str(data_dir))
    assert code == 0, out + err
    assert "move-aside" in [step["key"] for step in json.loads(out)["steps"]]


@pytest.mark.parametrize(("flags", "named"), [
    (["--initial-cluster", "m1\ntouch /tmp/owned #=http://127.0.0.1:2380"], "a member name"),
    (["--initial-cluster", "m1=http://127.0.0.1:2380", "--initial-cluster-token", "tok\nid #"], "--initial-cluster-token"),
])
def test_restore_plan_prints_no_line_a_member_name_or_token_smuggles_in(
    cli: Cli, tmp_path: Path, flags: list[str], named: str
) -> None:
    """A newline in a member name or the token became a line of its own in the plan's commands,
    which operators paste into a shell or run over ssh (the name is shell-quoted in the command,
    but the '# on the node of NAME' line is not)."""
    url = str(tmp_path / "repo")
    store_backup(BackupRepository.open(open_store(url), create=True), datetime(2026, 11, 22, 3, 0, tzinfo=UTC))
    code, out, err = cli("restore", "plan", "latest", "--repo", url, *flags)
    assert code == 3, out
    assert err.count("\n") == 1 and named in err and "control character" in err, err
    assert "touch" not in out and "id #" not in out


def test_a_dry_run_with_files_refuses_a_host_directory_another_user_could_change(cli: Cli, tmp_path: Path) -> None:
    """The dry run said OK; the restore then refused the files at fetch-files."""
    url = str(tmp_path / "repo")
    fake_backup(BackupRepository.open(open_store(url), create=True), datetime(2026, 11, 22, 3, 0, tzinfo=UTC), files=3)
    root = tmp_path / "node"
    (root / "var/lib/etcd/member").mkdir(parents=True)
    (root / "etc/kubernetes/pki").mkdir(parents=True)
    (root / "etc/kubernetes/pki").chmod(0o777)
    code, out, err = cli("restore", "latest", "--dry-run", "--files", "--force", "--repo", url, "--root", str(root),
                         "--supervisor", "none", "--name", "m0", "--initial-cluster", "m0=http://127.0.0.1:2380",
                         "--data-dir", "/var/lib/etcd")
    assert code == 1, out + err
    assert err.count("\n") == 1 and "cannot restore /etc/kubernetes/pki/file-0.crt" in err \
        and "writable by others" in err, err


@pytest.mark.parametrize("path", [f"/etc/kubernetes/pki/{'d' * 300}/ca.crt", f"/etc/{'n' * 300}"])
def test_a_dry_run_with_files_is_not_crashed_by_a_forged_file_name_too_long_to_look_at(
    cli: Cli, tmp_path: Path, path: str
) -> None:
    """A manifest listing a file whose name is too long for the host crashed the dry run (exit 4,
    ENAMETOOLONG) where it checks the host directories of the listed files."""
    url = str(tmp_path / "repo")
    repo = BackupRepository.open(open_store(url), create=True)
    listed = fake_backup(repo, datetime(2026, 11, 22, 3, 0, tzinfo=UTC), files=1)
    forged_id = listed.id.replace("T030000Z", "T040000Z")
    repo.write_object(listed.cluster, forged_id, "snapshot.db.zst", [b"not a real snapshot"])
    repo.commit(listed.model_copy(update={"id": forged_id,
                                          "files": (dataclasses.replace(listed.files[0], path=path),)}))
    root = tmp_path / "node"
    (root / "var/lib/etcd/member").mkdir(parents=True)
    (root / "etc/kubernetes/pki").mkdir(parents=True)
    code, out, err = cli("restore", "latest", "--dry-run", "--files", "--force", "--repo", url, "--root", str(root),
                         "--supervisor", "none", "--name", "m0", "--initial-cluster", "m0=http://127.0.0.1:2380",
                         "--data-dir", "/var/lib/etcd")
    assert code in (0, 1), out + err
    assert "unexpected error" not in err


def test_a_data_dir_whose_name_is_not_utf8_is_refused_before_a_journal_it_could_not_read(
    cli: Cli, tmp_path: Path
) -> None:
    """A data dir named with a byte that is not UTF-8 (legal on Linux) was restored, but its journal
    (JSON text) could not be read back: the restore could then be neither resumed nor rolled back
    ("restore journal ... is not one this lifeboat wrote")."""
    url = str(tmp_path / "repo")
    store_backup(BackupRepository.open(open_store(url), create=True), datetime(2026, 11, 22, 3, 0, tzinfo=UTC))
    data_dir = Path(os.fsdecode(bytes(tmp_path) + b"/etcd\xff"))
    (data_dir / "member").mkdir(parents=True)
    for flags in (["latest", "--force"], ["--rollback"]):
        code, out, err = cli("restore", *flags, "--no-start", "--repo", url, "--supervisor", "none",
                             "--name", "m0", "--initial-cluster", "m0=http://127.0.0.1:2380", "--data-dir", str(data_dir))
        assert code == 3, out + err
        assert err.count("\n") == 1 and "not UTF-8" in err, err
    assert sorted(os.listdir(tmp_path)) == ["etcd\udcff", "repo"]


@pytest.mark.parametrize("suffix", ["\n", "\t", "\r"])
def test_a_data_dir_with_a_control_character_is_refused_not_restored_into_beside_etcds_own(
    cli: Cli, tmp_path: Path, suffix: str
) -> None:
    """'--data-dir "$(read line)"' with its newline kept named another, absent, data dir: the restore
    went on into it (nothing to move aside) and etcd's own data dir stayed as it was."""
    url = str(tmp_path / "repo")
    store_backup(BackupRepository.open(open_store(url), create=True), datetime(2026, 11, 22, 3, 0, tzinfo=UTC))
    (tmp_path / "etcd/member").mkdir(parents=True)
    code, out, err = cli("restore", "latest", "--dry-run", "--force", "--repo", url, "--supervisor", "none",
                         "--name", "m0", "--initial-cluster", "m0=http://127.0.0.1:2380",
                         "--data-dir", f"{tmp_path}/etcd{suffix}")
    assert code == 3, out + err
    assert err.count("\n") == 1 and "control character" in err, err


@pytest.mark.parametrize("endpoint", ["http://[::1", "ftp://10.0.0.1:2379", "https://10.0.0.1:2379/v3", "http://:2379"])
def test_config_validate_refuses_an_etcd_endpoint_every_command_would_refuse_naming_the_key(
        cli: Cli, tmp_path: Path, endpoint: str) -> None:
    """`config validate` said valid, and then every command refused it as a bad "--endpoints"
    that nobody had typed."""
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"etcd: {{endpoints: ['{endpoint}']}}\n")
    code, _out, err = cli("config", "validate", str(config))
    assert code == 3 and f"{config}: etcd.endpoints: " in err and err.count("\n") == 1
    code, _out, err = cli("status", "--config", str(config))
    assert code == 3 and f"{config}: etcd.endpoints: " in err and "--endpoints" not in err

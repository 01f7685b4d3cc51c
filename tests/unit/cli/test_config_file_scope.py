"""A config file means the same to every command that takes ``--config``: each command that
decrypts backups or segments reads ``encryption.identity-files``, each that unpacks a snapshot
reads ``backup.tmp-dir``, and ``--identity`` / ``--tmp-dir`` replace them; ``repository.url``
serves every command that reads backups as ``--repo`` does.

A damaged identity file named only by the config shows that a command reads it: it is refused,
naming the file and showing none of the key. (restore, the k8s commands and restore plan read only
``--identity`` and told an operator whose config named the key that the backup could not be
decrypted.) The integration tests of restore and k8s decrypt real encrypted backups this way.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyrage
import pytest

from lifeboat.catalog.layout import MARKER_KEY
from lifeboat.catalog.repository import BackupRepository
from lifeboat.cli import k8s_history
from lifeboat.store import open_store
from lifeboat.pitr.history import ObjectHistory
from tests.support.cli import Cli
from tests.unit.cli.test_secrets_never_shown import assert_no_part_of
from tests.unit.retention.test_prune import store_backup

RESTORE_NODE = ("--supervisor", "none", "--name", "m1", "--initial-cluster", "m1=http://127.0.0.1:2380",
                "--dry-run")

# Each command that decrypts, as run against an empty repository; {tmp} is the test's tmp_path.
DECRYPTING = {
    "restore": ("restore", "latest", *RESTORE_NODE, "--data-dir", "{tmp}/etcd"),
    "restore --to-revision": ("restore", "--to-revision", "5", "--cluster", "prod", *RESTORE_NODE,
                              "--data-dir", "{tmp}/etcd"),
    "restore plan --to-revision": ("restore", "plan", "--to-revision", "5", "--cluster", "prod",
                                   "--initial-cluster", "m1=http://127.0.0.1:2380"),
    "k8s ls": ("k8s", "ls", "latest"),
    "k8s get": ("k8s", "get", "latest", "pod/web-0"),
    "k8s diff": ("k8s", "diff", "latest", "{tmp}/lifeboat.yaml"),
    "k8s undelete": ("k8s", "undelete", "--from", "latest", "-n", "team-a"),
    "k8s history": ("k8s", "history", "pod/web-0", "--cluster", "prod"),
    "verify": ("verify", "latest"),
    "synthesize": ("synthesize", "--to-revision", "5", "--cluster", "prod"),
}


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty repository: every command above ends with "not found" once it has its keys."""
    for var in ("LIFEBOAT_CONFIG", "LIFEBOAT_REPO", "LIFEBOAT_CLUSTER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "repo"
    path.mkdir()
    (path / MARKER_KEY).write_text(json.dumps({"format": "lifeboat-repository", "version": 2}))
    return str(path)


@pytest.fixture
def secret() -> str:
    return str(pyrage.x25519.Identity.generate())


def damaged_key(tmp_path: Path, secret: str) -> Path:
    """An identity file whose key has a typo: refused by whoever reads it, without being shown.

    The typo is one changed character, always a different one: the key's bech32 checksum
    catches any single change, so no random key can come out valid.
    """
    path = tmp_path / "damaged-key.txt"
    typo = "P" if secret[-1] == "Q" else "Q"
    path.write_text(f"# created: 2026-01-01T00:00:00Z\n{secret[:-1]}{typo}\n")
    return path


@pytest.mark.parametrize("ending", ["QQQ", "QQP", "PQQ", "ABC"])
def test_a_damaged_key_never_comes_out_as_the_key_it_was_made_from(tmp_path: Path, ending: str) -> None:
    secret = str(pyrage.x25519.Identity.generate())[:-3] + ending
    damaged = damaged_key(tmp_path, secret).read_text().splitlines()[-1]
    assert damaged != secret
    assert len(damaged) == len(secret)


def good_key(tmp_path: Path) -> Path:
    path = tmp_path / "good-key.txt"
    path.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    return path


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lifeboat.yaml"
    path.write_text(text)
    return path


def command(name: str, tmp_path: Path, repo: str, *flags: str) -> list[str]:
    return [word.format(tmp=tmp_path) for word in DECRYPTING[name]] + ["--repo", repo, *flags]


@pytest.mark.parametrize("name", DECRYPTING)
def test_every_decrypting_command_reads_the_config_files_identity_and_the_flag_replaces_it(
    cli: Cli, tmp_path: Path, repo: str, secret: str, name: str,
) -> None:
    key = damaged_key(tmp_path, secret)
    config = config_file(tmp_path, f"encryption:\n  identity-files: [{key}]\n")
    code, out, err = cli(*command(name, tmp_path, repo, "--config", str(config), "-v"))
    assert code == 3 and f"identity file {key}" in err, (code, err)
    assert_no_part_of(secret, out + err)

    # --identity replaces the file's list: the damaged key is not read; the command goes on to
    # find nothing in the empty repository.
    code, out, err = cli(*command(name, tmp_path, repo, "--config", str(config),
                                  "--identity", str(good_key(tmp_path))))
    assert "identity file" not in err and code in (1, 3), (code, err)
    assert_no_part_of(secret, out + err)


@pytest.mark.parametrize("name", ["k8s ls", "k8s get", "k8s diff", "k8s undelete"])
def test_k8s_commands_unpack_a_backup_in_the_config_files_tmp_dir_unless_the_flag_names_another(
    cli: Cli, tmp_path: Path, repo: str, name: str,
) -> None:
    missing = tmp_path / "no-such-dir"
    config = config_file(tmp_path, f"backup:\n  tmp-dir: {missing}\n")
    code, _out, err = cli(*command(name, tmp_path, repo, "--config", str(config)))
    assert code == 3 and f"temp dir {missing}" in err and "backup.tmp-dir" in err, (code, err)
    code, _out, err = cli(*command(name, tmp_path, repo, "--config", str(config), "--tmp-dir", str(tmp_path)))
    assert code == 1 and "temp dir" not in err, (code, err)


def test_k8s_history_unpacks_base_backups_in_the_config_files_tmp_dir_unless_the_flag_names_another(
    cli: Cli, tmp_path: Path, repo: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[Path | None] = []

    def recording(*_args: object) -> ObjectHistory:
        asked.append(_args[-1])  # type: ignore[arg-type]
        return ObjectHistory([], ())
    monkeypatch.setattr(k8s_history, "object_history", recording)
    spool, flagged = tmp_path / "spool", tmp_path / "flagged"
    config = config_file(tmp_path, f"backup:\n  tmp-dir: {spool}\n")
    assert cli(*command("k8s history", tmp_path, repo, "--config", str(config)))[0] == 1
    assert cli(*command("k8s history", tmp_path, repo, "--config", str(config), "--tmp-dir", str(flagged)))[0] == 1
    assert asked == [spool, flagged]


@pytest.mark.parametrize("name", ["k8s ls", "k8s get", "k8s diff", "k8s undelete"])
def test_k8s_commands_read_a_backup_of_the_config_files_repository(
    cli: Cli, tmp_path: Path, repo: str, name: str,
) -> None:
    # A backup SOURCE needed --repo or $LIFEBOAT_REPO: "to read a backup of that id pass --repo URL".
    config = config_file(tmp_path, f"repository: {{url: '{repo}'}}\n")
    words = [word.format(tmp=tmp_path) for word in DECRYPTING[name]]
    code, _out, err = cli(*words, "--config", str(config))
    assert code == 1 and "no complete backup" in err, (code, err)


def test_restore_plan_names_the_backup_latest_is_in_the_config_files_repository(
    cli: Cli, tmp_path: Path, repo: str,
) -> None:
    # 'latest' was resolved only with --repo or --cluster: with the repository in the config file
    # every node's command said 'latest', which could be another backup by the time it ran.
    stored = store_backup(BackupRepository.open(open_store(repo)), datetime(2026, 11, 22, 3, tzinfo=UTC))
    config = config_file(tmp_path, f"repository: {{url: '{repo}'}}\n")
    plan = cli.json("restore", "plan", "latest", "--initial-cluster", "m1=http://127.0.0.1:2380,m2=http://127.0.0.2:2380",
                    "--config", str(config))
    assert plan["backup_id"] == stored.id
    assert all(f"restore {stored.id} " in m["command"] for m in plan["members"]), plan

"""`lifeboat prune`, `pin`, `unpin`, `delete` of a pinned backup, and `config` on a local repository."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lifeboat.catalog.age_keys import load_recipients
from lifeboat.catalog.repository import BackupRepository
from lifeboat.cli.commands.prune import POLICY_HELP
from lifeboat.cli.main import main
from lifeboat.errors import UsageError
from lifeboat.retention import POLICY_CLASSES
from lifeboat.store import open_store
from tests.unit.retention.test_prune import store_backup


def test_prune_has_a_flag_for_every_retention_policy_in_its_order() -> None:
    assert list(POLICY_HELP) == list(POLICY_CLASSES)


class Run:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(list(args))
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    for var in ("LIFEBOAT_CONFIG", "LIFEBOAT_REPO", "LIFEBOAT_CLUSTER", "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    return Run(capsys)


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return tmp_path / "repo"


def five_backups(repo_dir: Path) -> list[str]:
    repo = BackupRepository.open(open_store(str(repo_dir)), create=True)
    now = datetime.now(UTC)
    return [store_backup(repo, now - timedelta(days=5 - i)).id for i in range(5)]


def listed(repo_dir: Path) -> list[str]:
    return [m.id for m in BackupRepository.open(open_store(str(repo_dir))).manifests()]


def test_dry_run_prints_every_verdict_and_deletes_nothing(run: Run, repo_dir: Path) -> None:
    ids = five_backups(repo_dir)
    code, out, _ = run("prune", "--repo", str(repo_dir), "--keep-last", "2", "--dry-run")
    assert code == 0
    for backup_id in ids[:3]:
        assert any(line.startswith("DELETE") and backup_id in line for line in out.splitlines())
    assert sum(line.startswith("KEEP") and "newest 2 (keep-last 2)" in line for line in out.splitlines()) == 2
    assert "dry run: nothing deleted" in out
    assert listed(repo_dir) == ids


def test_prune_uses_the_config_file_and_flags_replace_its_policies(
    run: Run, repo_dir: Path, tmp_path: Path
) -> None:
    ids = five_backups(repo_dir)
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"repository:\n  url: {repo_dir}\nretention:\n  keep-last: 4\n")
    code, out, err = run("prune", "--config", str(config), "-o", "json")
    assert code == 0, err
    assert json.loads(out)["deleted"] == [ids[0]]
    code, out, err = run("prune", "--config", str(config), "--keep-last", "1", "-o", "json")
    assert code == 0, err
    report = json.loads(out)
    assert report["policies"] == ["keep-last=1"] and report["deleted"] == ids[3:0:-1]
    assert listed(repo_dir) == [ids[4]]


def test_prune_without_any_policy_is_a_usage_error(run: Run, repo_dir: Path) -> None:
    five_backups(repo_dir)
    code, _, err = run("prune", "--repo", str(repo_dir))
    assert code == 3 and "no retention policy" in err


def test_bad_policy_flag_is_a_usage_error(run: Run, repo_dir: Path) -> None:
    five_backups(repo_dir)
    code, _, err = run("prune", "--repo", str(repo_dir), "--keep-last", "-3")
    assert code == 3 and "keep-last=-3" in err
    assert len(listed(repo_dir)) == 5


def test_pin_is_listed_shown_kept_by_prune_and_refused_by_delete(run: Run, repo_dir: Path) -> None:
    ids = five_backups(repo_dir)
    repo = ["--repo", str(repo_dir)]
    assert run("pin", ids[0], "--reason", "before upgrade", *repo)[0] == 0
    code, out, _ = run("list", *repo, "-o", "json")
    assert [b["pin"]["reason"] if b["pin"] else None for b in json.loads(out)] == ["before upgrade"] + [None] * 4
    assert "pinned     by " in run("show", ids[0], *repo)[1]
    code, _, err = run("delete", ids[0], "--yes", *repo)
    assert code == 3 and "is pinned (before upgrade)" in err
    assert run("prune", *repo, "--keep-last", "1")[0] == 0
    assert listed(repo_dir) == [ids[0], ids[4]]
    code, out, _ = run("unpin", ids[0], *repo)
    assert code == 0 and "unpinned" in out
    assert run("prune", *repo, "--keep-last", "1")[0] == 0
    assert listed(repo_dir) == [ids[4]]


def test_a_pin_given_while_delete_runs_keeps_the_backup(run: Run, repo_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`lifeboat delete ID` checked for a pin, then deleted the backup and the pin given meanwhile."""
    ids = five_backups(repo_dir)
    repo = ["--repo", str(repo_dir)]
    assert run("pin", ids[0], "--reason", "keep", *repo)[0] == 0
    with monkeypatch.context() as m:
        m.setattr(BackupRepository, "pin_of", lambda self, backup: None)  # checked just before the pin came
        code, _, err = run("delete", ids[0], "--yes", *repo)
    assert code == 1 and f"backup {ids[0]} was not deleted: it was pinned meanwhile" in err
    assert ids[0] in listed(repo_dir)
    pin = BackupRepository.open(open_store(str(repo_dir))).pin_of(BackupRepository.open(
        open_store(str(repo_dir))).find(ids[0]))
    assert pin is not None and pin.reason == "keep"
    assert run("delete", ids[1], "--yes", *repo)[0] == 0 and ids[1] not in listed(repo_dir)
    assert sorted(os.listdir(repo_dir / "clusters" / "prod" / "pins")) == [f"{ids[0]}.json"]


def test_delete_with_force_removes_a_pinned_backup(run: Run, repo_dir: Path) -> None:
    ids = five_backups(repo_dir)
    assert run("pin", ids[1], "--repo", str(repo_dir))[0] == 0
    assert run("delete", ids[1], "--yes", "--force", "--repo", str(repo_dir))[0] == 0
    assert ids[1] not in listed(repo_dir)


def test_config_validate_exit_codes(run: Run, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("cluster: prod\nretention:\n  keep-last: 7\n")
    bad.write_text("retention:\n  keep-last: -3\n")
    code, out, _ = run("config", "validate", str(good))
    assert code == 0 and "valid" in out and "keep-last=7" in out
    code, _, err = run("config", "validate", str(bad))
    assert code == 3
    assert err.strip() == f"lifeboat: error: {bad}: retention.keep-last: must be a positive integer, got -3"


@pytest.mark.parametrize("url,said", [
    ("ftp://x/y", "unknown repository scheme 'ftp'"), ("s3://", "has no bucket"),
    ("file://repo", "names host 'repo'"), ("s3://bucket/../../etc", "invalid key prefix"),
])
def test_config_validate_refuses_a_repository_url_every_command_would(
        run: Run, tmp_path: Path, url: str, said: str) -> None:
    """An agent whose config validates must not fail on its repository at its first backup."""
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"repository:\n  url: {url}\n")
    code, _, err = run("config", "validate", str(config))
    assert code == 3 and f"{config}: repository.url: " in err and said in err


def test_config_validate_refuses_a_segment_size_too_small_for_the_recipients(
        run: Run, tmp_path: Path, rsa_recipients: list[str]) -> None:
    keys = tmp_path / "recipients.txt"
    keys.write_text("\n".join(rsa_recipients) + "\n")
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"capture:\n  segment-max-bytes: 4KiB\nencryption:\n  recipients: [{keys}]\n")
    code, _, err = run("config", "validate", str(config))
    assert code == 3
    assert err.startswith(f"lifeboat: error: {config}: capture.segment-max-bytes 4096 leaves less than half")
    assert "use at least" in err and "ssh-rsa" not in err and err.count("\n") == 1
    config.write_text(f"capture:\n  segment-max-bytes: 16KiB\nencryption:\n  recipients: [{keys}]\n")
    assert run("config", "validate", str(config))[0] == 0
    # A recipients file only the backup host has is left for capture's own check there.
    config.write_text(f"capture:\n  segment-max-bytes: 4KiB\nencryption:\n  recipients: [{tmp_path}/absent.txt]\n")
    assert run("config", "validate", str(config))[0] == 0


@pytest.mark.parametrize("kind", ["device", "fifo", "directory", "inline"])
def test_config_validate_refuses_a_recipient_the_agent_refuses_at_start(run: Run, tmp_path: Path, kind: str) -> None:
    """`encryption.recipients: [/dev/zero]` validated, then the agent refused to start on it (exit 3)."""
    value = {"device": "/dev/zero", "fifo": str(tmp_path / "fifo"), "directory": str(tmp_path),
             "inline": "age1notarecipient"}[kind]
    if kind == "fifo":
        os.mkfifo(value)
    with pytest.raises(UsageError):  # what backup and the agent do with it
        load_recipients([value])
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"encryption:\n  recipients: ['{value}']\n")
    code, _, err = run("config", "validate", str(config))
    assert code == 3 and err.startswith(f"lifeboat: error: {config}: encryption.recipients: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize("content", ["", "# recipients: none yet\n\n"])
def test_a_recipients_file_with_no_recipient_is_refused_not_taken_as_no_encryption(
        run: Run, tmp_path: Path, content: str) -> None:
    """Backups were stored unencrypted when encryption.recipients named such a file."""
    keys = tmp_path / "recipients.txt"
    keys.write_text(content)
    with pytest.raises(UsageError, match=f"^recipients file {keys} holds no recipient"):
        load_recipients([str(keys)])  # as backup and the agent load them
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"encryption:\n  recipients: [{keys}]\n")
    code, _, err = run("config", "validate", str(config))
    assert code == 3 and "holds no recipient" in err


def test_config_show_names_origins_and_hides_secrets(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "lifeboat.yaml"
    config.write_text("cluster: from-file\nrepository:\n  url: s3://bucket/prefix\n")
    monkeypatch.setenv("LIFEBOAT_CONFIG", str(config))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id-value-xyz")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2-secret-value")
    monkeypatch.setenv("ETCDCTL_ENDPOINTS", "https://10.1.1.1:2379")
    code, out, _ = run("config", "show", "--cluster", "from-flag", "-o", "json")
    assert code == 0
    values = {v["key"]: (v["value"], v["origin"]) for v in json.loads(out)["values"]}
    assert values["cluster"] == ("from-flag", "flag --cluster")
    assert values["repository.url"] == ("s3://bucket/prefix", f"file {config}")
    assert values["etcd.endpoints"] == (["https://10.1.1.1:2379"], "env $ETCDCTL_ENDPOINTS")
    assert values["backup.zstd-level"] == (1, "default")
    code, table_out, _ = run("config", "show")
    for text in (out, table_out):
        assert "hunter2" not in text and "key-id-value" not in text
    assert "AWS_SECRET_ACCESS_KEY (values hidden)" in table_out

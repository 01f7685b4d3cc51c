"""`lifeboat k8s` on a point in time: a namespace deleted after the last full backup comes back
as it was one second before the deletion, from the base backup plus captured events."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lifeboat.catalog.layout import segment_key
from lifeboat.catalog.repository import BackupRepository
from lifeboat.store import open_store
from tests.integration.test_k8s_cli import client_for, etcd_flags, everything, keyspace  # noqa: F401 (fixture)
from tests.support.binaries import EtcdRelease
from tests.support.capture_workload import capture_options, capturing, wait_for
from tests.support.cli import Cli
from tests.support.etcd import EtcdCluster
from tests.support.etcd_load import load_keys
from tests.support.k8s_keyspace import Keyspace, iter_items
from tests.support.pki import Pki

pytestmark = pytest.mark.integration


def test_undelete_to_time_brings_back_a_namespace_created_and_deleted_after_the_last_backup(
        cli: Cli, release35: EtcdRelease, pki: Pki, tmp_path: Path, keyspace: Keyspace) -> None:
    repo_url = f"file://{tmp_path / 'repo'}"
    repo = BackupRepository.open(open_store(repo_url, dict(os.environ)), create=True)
    team_a = keyspace.in_namespace("team-a")
    changed = b"/registry/configmaps/team-a/configmaps-0"
    with EtcdCluster(release35, tmp_path / "etcd", pki=pki) as etcd:
        member = etcd.first()
        flags = etcd_flags(member, pki)
        with client_for(member, pki) as client:
            options = capture_options("default", member.client_url, tmp_path / "spool", flush_interval=0.2)
            with capturing(client, repo, options) as status:
                wait_for(lambda: status.chain is not None)  # the base backup holds no team-a
                load_keys(client, iter_items(keyspace))
                written = client.put(changed, b"k8s\x00as it was one second before")
                # Capture must have seen it before deleted_at is taken, however loaded the machine.
                wait_for(lambda: status.last_revision >= written)
                time.sleep(1.2)
                before_delete = everything(client)
                time.sleep(0.3)
                deleted_at = datetime.now(UTC)
                for key in team_a:
                    client.delete_range(key)
                wait_for(lambda: status.last_revision >= client.range(b"\0", limit=1).revision)
            one_second_before = (deleted_at - timedelta(seconds=1)).isoformat()

            ls = cli.json("k8s", "ls", "latest", "--to-time", one_second_before, "--repo", repo_url)
            assert any(s["namespace"] == "team-a" for s in ls["summary"])
            dry = cli.json("k8s", "undelete", "--from", "latest", "--to-time", one_second_before,
                           "-n", "team-a", "--repo", repo_url, *flags)
            assert dry["applied"] is False
            applied = cli.json("k8s", "undelete", "--from", "latest", "--to-time", one_second_before,
                               "-n", "team-a", "--apply", "--repo", repo_url, *flags)
            assert sorted(applied["written"]) == sorted(k.decode() for k in team_a)
            now = everything(client)
            assert {k: now[k][0] for k in team_a} == {k: before_delete[k][0] for k in team_a}
            assert now[changed][0] == b"k8s\x00as it was one second before"


def test_history_lists_every_version_of_one_object_with_what_changed(
        cli: Cli, release35: EtcdRelease, pki: Pki, tmp_path: Path, keyspace: Keyspace) -> None:
    repo_url = f"file://{tmp_path / 'repo'}"
    repo = BackupRepository.open(open_store(repo_url, dict(os.environ)), create=True)
    widget = b"/registry/example.com/widgets/team-b/widget-0"
    original = keyspace.items[widget]
    with EtcdCluster(release35, tmp_path / "etcd", pki=pki) as etcd:
        member = etcd.first()
        with client_for(member, pki) as client:
            load_keys(client, iter_items(keyspace))  # in the base backup
            options = capture_options("default", member.client_url, tmp_path / "spool", flush_interval=0.2)
            with capturing(client, repo, options) as status:
                wait_for(lambda: status.chain is not None)
                grown = client.put(widget, original.replace(b'"size":0', b'"size":3'))
                relabelled = client.put(widget, original.replace(b'"size":0', b'"size":3')
                                        .replace(b'"app":"web"', b'"app":"api"'))
                gone = client.put(b"/registry/configmaps/team-b/unrelated", b"k8s\x00noise")
                client.delete_range(widget)
                wait_for(lambda: status.last_revision >= gone + 1)
    doc = cli.json("k8s", "history", "widgets.example.com/widget-0", "-n", "team-b", "--repo", repo_url)
    versions = doc["versions"]
    assert [v["change"] for v in versions] == ["put", "put", "put", "delete"]
    assert versions[0]["seen"] is None and versions[0]["changes"] == ["as held by the base backup"]
    assert [v["revision"] for v in versions[1:3]] == [grown, relabelled]
    assert versions[1]["changes"] == ["spec.size: 0 → 3"]
    assert versions[2]["changes"] == ['metadata.labels.app: "web" → "api"']
    assert versions[3]["changes"] == ["deleted"] and versions[3]["revision"] == gone + 1


def captured_settings(release: EtcdRelease, pki: Pki, tmp_path: Path,
                      values: tuple[bytes, ...]) -> tuple[str, BackupRepository, list[int]]:
    """A file repository holding capture's chain of configmap team-c/settings written with each of
    ``values`` in turn (a segment each), and the revisions they were written at."""
    repo_url = f"file://{tmp_path / 'repo'}"
    repo = BackupRepository.open(open_store(repo_url, dict(os.environ)), create=True)
    written: list[int] = []
    with EtcdCluster(release, tmp_path / "etcd", pki=pki) as etcd:
        member = etcd.first()
        with client_for(member, pki) as client:
            options = capture_options("default", member.client_url, tmp_path / "spool", flush_interval=0.2)
            with capturing(client, repo, options) as status:
                wait_for(lambda: status.chain is not None)
                for value in values:
                    written.append(client.put(b"/registry/configmaps/team-c/settings", value))
                    wait_for(lambda: status.last_revision >= written[-1])
                    time.sleep(0.5)
    return repo_url, repo, written


def test_history_with_a_segment_missing_says_what_it_cannot_show_and_fails(
        cli: Cli, release35: EtcdRelease, pki: Pki, tmp_path: Path) -> None:
    """A segment gone from the repository cuts the chain there: the versions after it cannot be
    shown, which the history says (and fails on), instead of ending early in silence."""
    repo_url, repo, written = captured_settings(release35, pki, tmp_path, (b"k8s\x00one", b"k8s\x00two", b"k8s\x00three"))
    whole = cli.json("k8s", "history", "configmaps/settings", "-n", "team-c", "--repo", repo_url)
    assert [v["revision"] for v in whole["versions"]] == written and whole["gaps"] == []
    chain = repo.chain_store.chains("default")[-1]
    holding = [ref for ref in chain.segments if ref.first_revision <= written[1] <= ref.last_revision]
    assert len(holding) == 1 and holding[0].last_revision < written[2], "the second version has a segment of its own"
    repo.store.delete(segment_key("default", chain.info.chain, holding[0].name))

    code, out, err = cli("k8s", "history", "configmaps/settings", "-n", "team-c", "--repo", repo_url, "-o", "json")
    document = json.loads(out)
    assert code == 1 and [v["revision"] for v in document["versions"]] == written[:1]
    [gap] = document["gaps"]
    assert gap["segments_missing"] and gap["after_revision"] == holding[0].first_revision - 1
    assert f"the history is incomplete: nothing is known after revision {gap['after_revision']}" in err
    assert "is missing from the repository" in err


def test_history_prints_a_gap_reason_read_from_the_repository_with_its_control_characters_escaped(
        cli: Cli, release35: EtcdRelease, pki: Pki, tmp_path: Path) -> None:
    """The reason a chain's gap record gives (text from the repository) reached the terminal raw in
    `k8s history`'s 'the history is incomplete' line: an escape sequence in it was acted on."""
    from lifeboat.catalog.chains import Gap

    repo_url, repo, [written] = captured_settings(release35, pki, tmp_path, (b"k8s\x00one",))
    chain = repo.chain_store.chains("default")[-1]
    repo.chain_store.record_gap("default", chain.info.chain,
                                Gap("watch lost\x1b]0;owned\x07\x1b[2J", written, datetime.now(UTC)))
    code, out, err = cli("k8s", "history", "configmaps/settings", "-n", "team-c", "--repo", repo_url)
    assert code == 0 and "the history is incomplete" in err
    assert "\x1b" not in err and "watch lost\\x1b]0;owned\\x07\\x1b[2J" in err

"""A later base folds a capture chain (a synthetic full backup, or a backup taken while capture
ran): retention lets the old base and its segments go, and restores to later points start from
the later base (real etcd, kubeadm-like node)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lifeboat.errors import UsageError
from lifeboat.etcd import EtcdClient
from lifeboat.pitr import PointTarget, build_point_snapshot, find_point
from tests.support.binaries import EtcdRelease
from tests.support.capture_workload import capture_options, capture_started, open_repository, wait_for, write_history
from tests.support.etcd import EtcdMember
from tests.support.cli import Cli
from tests.support.pki import Pki
from tests.integration.test_point_in_time import (
    backup_while_capturing, full_state, node_capture, restored_state, source_state,
)
from tests.integration.test_restore_cli import Node, kubeadm_node  # noqa: F401 (fixture)
from tests.integration.test_restore_cli import client as tls_client

pytestmark = pytest.mark.integration


def test_prune_drops_the_base_and_segments_a_synthetic_backup_folded_and_later_points_still_restore(
        kubeadm_node: Node, cli: Cli, pki: Pki, tmp_path: Path, release: EtcdRelease) -> None:
    node = kubeadm_node
    url, flags = node.etcd.client_url, node.flags
    repo = open_repository(node.repo)
    with tls_client(url, pki) as c:
        with node_capture(c, node, repo, tmp_path / "spool") as status:
            early = write_history(c, 3, tag="early")
            wait_for(lambda: status.last_revision >= early.revisions[-1])
            time.sleep(0.5)  # the early events are committed in segments of their own
            late = write_history(c, 3, tag="late")
            wait_for(lambda: status.last_revision >= late.revisions[-1])
        folded, later, lost = early.revisions[-1], late.revisions[len(late.revisions) // 2], early.revisions[1]
        expected = full_state(c, later)
    (base_backup,) = (m.id for m in repo.manifests("default"))

    synthetic = cli.json("synthesize", "--to-revision", str(folded), "--repo", node.repo)
    assert synthetic["labels"]["lifeboat.synthetic-seen"].endswith("Z")  # type: ignore[index]
    before = cli.json("timeline", "--repo", node.repo)
    segments_before = sum(w["segments"] for w in before[0]["windows"])  # type: ignore[index]

    pruned = cli.json("prune", "--keep-last", "1", "--repo", node.repo)
    assert pruned["deleted"] == [base_backup] and pruned["chains_removed"] == []
    (chain,) = pruned["chains"]  # type: ignore[misc]
    assert chain["verdict"] == "fold" and pruned["segments_removed"] == chain["segments_deleted"] >= 1
    assert [m.id for m in repo.manifests("default")] == [synthetic["id"]]

    (cluster,) = cli.json("timeline", "--repo", node.repo)  # type: ignore[misc]
    (window,) = cluster["windows"]
    assert (window["base"], window["first_revision"]) == (synthetic["id"], folded) and cluster["gaps"] == []
    assert window["last_revision"] >= late.revisions[-1]
    assert sum(w["segments"] for w in cluster["windows"]) < segments_before

    # The synthetic backup, now the chain's only base, drills like any backup, bumped restore included.
    drill = cli.json("verify", str(synthetic["id"]), "--drill", "--repo", node.repo,
                     "--restore-tool", str(release.etcdutl or release.etcdctl), "--etcd-binary", str(release.etcd))
    checks = {c["name"]: c for c in drill["drill_checks"]}  # type: ignore[union-attr]
    assert drill["ok"] and all(c["ok"] for c in checks.values()), checks
    assert checks["revision"]["detail"] == f"{folded} (snapshot: {folded})"
    bumped = checks["bumped restore"]["detail"]
    assert f"revision {folded + 1_000_000_000} " in bumped and f"a watch from revision {folded} is refused" in bumped

    code, _out, err = cli("restore", "--to-revision", str(lost), *flags, "--dry-run")
    assert code == 3 and "before the oldest backup" in err and f"revision {folded} (" in err
    plan = cli.json("restore", "--to-revision", str(later), *flags, "--dry-run")
    assert synthetic["id"] in plan["title"]  # type: ignore[operator]

    result = cli.json("restore", "--to-revision", str(later), *flags)
    assert "replay-capture" in result["ran"]  # type: ignore[operator]
    with tls_client(url, pki) as c:
        assert c.range(b"\0", limit=1).revision == later + 1_000_000_000
        assert full_state(c) == expected


def test_prune_folds_a_chain_into_a_backup_taken_while_capture_ran_and_capture_goes_on_in_it(
        etcd: EtcdMember, client: EtcdClient, cli: Cli, tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    repo = open_repository(repo_dir)
    options = capture_options("prod", etcd.client_url, tmp_path / "spool", flush_interval=0.1,
                              heartbeat_interval=0.2)
    with capture_started(client, repo, options) as status:
        chain = status.chain
        early = write_history(client, 3, tag="early")
        wait_for(lambda: status.last_revision >= early.revisions[-1])
        time.sleep(0.3)  # the early events are committed in segments of their own
        middle = write_history(client, 1, tag="middle")  # and the segment holding the backup's revision
        wait_for(lambda: status.last_revision >= middle.revisions[-1])
        time.sleep(0.3)
        scheduled = backup_while_capturing(cli, etcd, repo_dir)
        late = write_history(client, 3, tag="late")
        wait_for(lambda: status.last_revision >= late.revisions[-1])

        pruned = cli.json("prune", "--keep-last", "1", "--repo", str(repo_dir))
        assert pruned["deleted"] == [chain] and pruned["chains_removed"] == []
        (judged,) = pruned["chains"]  # type: ignore[misc]
        assert judged["verdict"] == "fold" and pruned["segments_removed"] == judged["segments_deleted"] >= 1
        assert scheduled["id"] in judged["reasons"][0]

        more = write_history(client, 2, tag="more")
        wait_for(lambda: status.last_revision >= more.revisions[-1])
        time.sleep(1.0)  # heartbeats, each looking for the chain's base
        assert status.chain == chain and status.gaps == 0 and status.bases == 1

    state = int(scheduled["labels"]["lifeboat.state-revision"])
    (listing,) = repo.chain_store.chains("prod")
    assert all(s.last_revision >= state for s in listing.segments) and listing.gap is None
    assert any(s.first_revision <= state <= s.last_revision for s in listing.segments)  # kept: it dates the backup
    (cluster,) = cli.json("timeline", "--repo", str(repo_dir))  # type: ignore[misc]
    (window,) = cluster["windows"]
    assert (window["base"], window["first_revision"], window["chain"]) == (scheduled["id"], state, chain)
    assert window["last_revision"] >= more.revisions[-1] and cluster["gaps"] == []
    for revision in (late.revisions[0], more.revisions[-1]):
        point = find_point(repo, "prod", PointTarget(revision=revision), None)
        assert point.base.id == scheduled["id"]
        built = build_point_snapshot(repo, point, None, tmp_path / f"at-{revision}.db")
        assert restored_state(built.path) == source_state(client, revision)
    with pytest.raises(UsageError, match="before the oldest backup"):
        find_point(repo, "prod", PointTarget(revision=early.revisions[1]), None)

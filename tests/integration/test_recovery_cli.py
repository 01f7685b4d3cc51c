"""`lifeboat status` and `lifeboat member replace` against real 3-member etcd 3.5.1 and 3.4.23 over mTLS."""

from __future__ import annotations

import os
import shlex
import signal
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.support.binaries import EtcdRelease
from tests.support.cli import Cli
from tests.support.etcd import EtcdCluster, EtcdMember
from tests.support.kubeadm_node import install_etcd_client_files, make_kubeadm_node
from tests.support.pki import Pki

pytestmark = pytest.mark.integration


@pytest.fixture
def trio(release: EtcdRelease, pki: Pki, tmp_path: Path) -> Iterator[EtcdCluster]:
    with EtcdCluster(release, tmp_path / "etcd", size=3, pki=pki) as cluster:
        yield cluster


def tls(pki: Pki, *endpoints: str) -> list[str]:
    return [f"--endpoints={','.join(endpoints)}", f"--cacert={pki.ca}", f"--cert={pki.client.cert}",
            f"--key={pki.client.key}", "--dial-timeout=2"]


def status_until(cli: Cli, flags: list[str], action: str, timeout: float = 15) -> tuple[int, dict[str, object]]:
    """`status -o json` until it recommends ``action`` (etcd needs an election timeout to notice)."""
    deadline = time.monotonic() + timeout
    while True:
        code, document = cli.json_with_code("status", *flags)
        decision = document["decision"]
        assert isinstance(decision, dict)
        if decision["action"] == action or time.monotonic() > deadline:
            return code, document
        time.sleep(0.3)


def test_status_follows_the_cluster_from_healthy_to_quorum_lost(
    cli: Cli, trio: EtcdCluster, pki: Pki, tmp_path: Path
) -> None:
    m0, m1, m2 = trio.members
    # Only m0 is given: the others are found on the client URLs they advertise.
    flags = tls(pki, m0.client_url)
    repo = tmp_path / "repo"
    code, _, err = cli("backup", *flags, f"--repo={repo}", "--no-files")
    assert code == 0, err

    code, document = cli.json_with_code("status", *flags, f"--repo={repo}")
    assert code == 0
    assert document["summary"] == "3 voting members, 3 healthy, quorum 2, can lose 1"
    assert document["can_lose"] == 1
    members = document["members"]
    assert isinstance(members, list)
    assert sorted(m["name"] for m in members) == ["m0", "m1", "m2"]
    assert all(m["healthy"] and m["raft_term"] >= 1 and m["db_size"] > 0 for m in members)
    assert sum(m["is_leader"] for m in members) == 1
    newest = document["newest_backup"]
    assert isinstance(newest, dict) and newest["id"] and 0 <= newest["age_seconds"] < 120
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"repository: {{url: '{repo}'}}\n")
    _code, from_config = cli.json_with_code("status", *flags, "--config", str(config))
    shown = from_config.get("newest_backup")  # the config's repository too, not only --repo
    assert isinstance(shown, dict) and shown["id"] == newest["id"]
    assert document["decision"] == {"action": "nothing", "reason": document["decision"]["reason"],  # type: ignore[index]
                                    "members": [], "commands": [], "full_restore_refused": True}

    code, out, _ = cli("status", *flags)
    assert code == 0
    assert "3 voting members, 3 healthy, quorum 2, can lose 1" in out
    assert "recommended: nothing" in out

    code, _, err = cli("member", "replace", "m1", *flags)
    assert code == 1 and "m1 is healthy" in err

    m2.kill()
    code, document = status_until(cli, flags, "replace-members")
    assert code == 1
    assert document["can_lose"] == 0 and document["quorum_lost"] is False
    assert document["decision"]["members"] == ["m2"]  # type: ignore[index]
    assert document["decision"]["commands"] == ["lifeboat member replace m2"]  # type: ignore[index]
    down = next(m for m in document["members"] if m["name"] == "m2")  # type: ignore[union-attr]
    assert not down["reachable"] and "unreachable" in down["problem"]

    m1.kill()
    code, document = status_until(cli, flags, "restore-all")
    assert code == 1
    assert document["quorum_lost"] is True
    assert document["decision"]["action"] == "restore-all"  # type: ignore[index]
    # m0 may still call itself leader for one election timeout before check-quorum demotes it.
    assert str(document["summary"]).startswith("3 voting members, ")
    assert str(document["summary"]).endswith(", quorum 2, QUORUM LOST")
    code, _, err = cli("member", "replace", "m2", *flags)
    assert code == 1 and "quorum is lost" in err

    m0.kill()
    code, document = cli.json_with_code("status", *flags)
    assert code == 2
    assert document["decision"]["action"] == "unknown"  # type: ignore[index]


def start_command(member: EtcdMember, pidfile: Path) -> str:
    """A shell command starting ``member``'s etcd in the background, with name and cluster
    from the LIFEBOAT_* variables lifeboat sets."""
    lifeboat_flags = ("--name=", "--initial-cluster=", "--initial-cluster-state=", "--initial-advertise-peer-urls=")
    args = [a for a in member.args("unused", "lifeboat-test", "existing") if not a.startswith(lifeboat_flags)]
    return (f'{shlex.join(args)} --name="$LIFEBOAT_NAME" --initial-cluster="$LIFEBOAT_INITIAL_CLUSTER" '
            '--initial-advertise-peer-urls="$LIFEBOAT_INITIAL_ADVERTISE_PEER_URLS" '
            '--initial-cluster-state="$LIFEBOAT_INITIAL_CLUSTER_STATE" '
            f">>{shlex.quote(str(member.log_path))} 2>&1 & echo $! >{shlex.quote(str(pidfile))}")


def stop_pid(pidfile: Path) -> None:
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_member_replace_heals_a_cluster_that_kept_quorum(
    cli: Cli, trio: EtcdCluster, pki: Pki, tmp_path: Path
) -> None:
    m0, _, m2 = trio.members
    flags = tls(pki, m0.client_url)
    m0.etcdctl("put", "/registry/before-replace", "kept")
    m2.kill()
    old_db = (m2.data_dir / "member" / "snap" / "db").read_bytes()
    # Leftovers under the per-second names this replacement would use (an earlier replacement
    # or restore within the same second): they are kept, and it picks a name of its own.
    start = datetime.now(timezone.utc)
    decoys = [m2.data_dir.with_name(f"{m2.data_dir.name}.lifeboat-moved-{start + timedelta(seconds=s):%Y%m%dT%H%M%SZ}")
              for s in range(300)]
    for decoy in decoys:
        decoy.mkdir()
        (decoy / "left-over").write_text("kept")

    code, out, err = cli("member", "replace", "m2", *flags, f"--data-dir={m2.data_dir}", "--dry-run")
    assert code == 0, err
    assert "remove member m2" in out and "Z-2\n" in out and "as a learner" in out
    assert m2.data_dir.exists() and not list(m2.data_dir.parent.glob("*.lifeboat-moved-*Z-2"))

    pidfile = tmp_path / "m2.pid"
    try:
        code, out, err = cli("member", "replace", "m2", *flags, f"--data-dir={m2.data_dir}",
                             f"--start-command={start_command(m2, pidfile)}", "--timeout=30")
        assert code == 0, err + m2.log_tail()
        assert "promoted" in out and "member m2 replaced" in out

        moved = list(m2.data_dir.parent.glob(f"{m2.data_dir.name}.lifeboat-moved-*Z-2"))
        assert len(moved) == 1 and moved[0].name in out
        assert all([p.name for p in d.iterdir()] == ["left-over"] for d in decoys)
        assert (moved[0] / "member" / "snap" / "db").read_bytes() == old_db
        assert (m2.data_dir / "member").is_dir()  # the new member's own data

        code, document = cli.json_with_code("status", *flags)
        assert code == 0, document
        assert document["summary"] == "3 voting members, 3 healthy, quorum 2, can lose 1"
        assert document["learners"] == 0
        # The rebuilt member serves the data written before it failed.
        assert "kept" in m2.etcdctl("get", "/registry/before-replace", "--consistency=s")
    finally:
        stop_pid(pidfile)


def test_restore_is_refused_while_the_backups_cluster_keeps_quorum_unless_forced(
    cli: Cli, trio: EtcdCluster, pki: Pki, tmp_path: Path
) -> None:
    m0, _, m2 = trio.members
    repo = f"file://{tmp_path / 'repo'}"
    backup = cli.json("backup", *tls(pki, m0.client_url), "--repo", repo, "--no-files")
    m2.kill()
    old_db = (m2.data_dir / "member" / "snap" / "db").read_bytes()
    plan = cli.json("restore", "plan", str(backup["id"]), "--initial-cluster", trio.initial_cluster,
                    "--repo", repo)
    argv = next(m["argv"] for m in plan["members"] if m["name"] == "m2")[1:]
    # m2's own etcd is down: its endpoint comes first (the member restored), then one still up.
    restore = [*argv, f"--data-dir={m2.data_dir}", "--supervisor=none", "--wait-timeout=20",
               *tls(pki, m2.client_url, m0.client_url)]

    code, out, err = cli(*restore)
    assert code == 1, out + err
    assert "still has quorum" in err and "lifeboat member replace m2" in err and "--force" in err
    # Only this node's dead member named (a kubeadm node's loopback URL): nothing answered and the
    # restore went ahead. The backup's member and those the data dir records are asked too.
    code, out, err = cli(*restore[:-len(tls(pki))], *tls(pki, m2.client_url), "--dry-run")
    assert code == 1 and "still has quorum" in err and "lifeboat member replace m2" in err, out + err
    assert (m2.data_dir / "member" / "snap" / "db").read_bytes() == old_db
    assert not list(m2.data_dir.parent.glob("*.lifeboat-moved-*"))

    code, out, err = cli(*restore, "--force", "--dry-run")
    assert code == 0, err
    assert ".lifeboat-moved-" in out


def test_kubeadm_node_needs_no_flags_and_its_data_dir_and_quota_are_found(
    cli: Cli, release35: EtcdRelease, pki: Pki, tmp_path: Path
) -> None:
    with EtcdCluster(release35, tmp_path / "etcd", size=3, pki=pki) as cluster:
        m0, _, m2 = cluster.members
        # This host is m2's node; its manifest's loopback listener stands for m0's URL.
        node = make_kubeadm_node(tmp_path / "node", name="m2")
        manifest = node.host("/etc/kubernetes/manifests/etcd.yaml")
        manifest.write_text(manifest.read_text().replace("https://127.0.0.1:2379", m0.client_url)
                            .replace("    - --name=m2\n", "    - --name=m2\n    - --quota-backend-bytes=8589934592\n"))
        install_etcd_client_files(node, pki.ca, pki.client.cert, pki.client.key,
                                  "/etc/kubernetes/pki/etcd/healthcheck-client")
        code, document = cli.json_with_code("status", "--root", str(node.root))
        assert code == 0
        assert document["healthy_voting_members"] == 3
        assert {m["quota_bytes"] for m in document["members"]} == {8 * 1024**3}  # type: ignore[union-attr]

        m2.kill()
        code, out, err = cli("member", "replace", "m2", "--root", str(node.root), "--dry-run")
        assert code == 0, err
        assert f"move the data dir {node.host('/var/lib/etcd')} aside" in out
        assert node.host("/var/lib/etcd/member/snap/db").exists()

"""`lifeboat restore` against real etcd 3.5.1 and 3.4.23: a kubeadm-style node and a 3-member cluster."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyrage
import pytest

from lifeboat.cli.main import main
from lifeboat.etcd import ConnectionSettings, EtcdClient, RevisionCompacted, TlsConfig
from lifeboat.restore import files as files_module
from lifeboat.restore.journal import journal_path
from lifeboat.etcd.data_dir import utc_stamp
from lifeboat.errors import UsageError
from lifeboat.restore.steps import Preflight, PutInPlace, RestoreData
from lifeboat.snapshot import iter_latest
from tests.support.binaries import EtcdRelease
from tests.support.cli import Cli
from tests.support.etcd import EtcdCluster, EtcdMember
from tests.support.etcd_load import load_keys
from tests.support.forged_archive import Member, forge_stored_backup
from tests.support.kubeadm_node import (
    APISERVER_YAML, KubeadmNode, etcd_manifest, install_etcd_client_files, make_kubeadm_node, write,
)
from tests.support.kubelet import FakeKubelet
from tests.support.pki import Pki
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


def client(url: str, pki: Pki) -> EtcdClient:
    return EtcdClient(ConnectionSettings((url,), TlsConfig(pki.ca, pki.client.cert, pki.client.key)))


def keyspace(url: str, pki: Pki) -> dict[bytes, bytes]:
    with client(url, pki) as c:
        return {kv.key: kv.value for kv in c.range_all(b"", prefix=True)}


def revision(url: str, pki: Pki) -> int:
    with client(url, pki) as c:
        return c.range(b"\0", limit=1).revision


def objects(count: int, tag: str = "") -> list[tuple[bytes, bytes]]:
    return [(f"/registry/configmaps/ns-{i % 5}/cm-{i:04d}".encode(), f"v{i}{tag}".encode() * 20)
            for i in range(count)]


@dataclass
class NodeEtcd(EtcdMember):
    """A member whose data dir is the kubeadm node's /var/lib/etcd."""

    root: Path = Path("/nonexistent")

    @property
    def data_dir(self) -> Path:
        return self.root / "var/lib/etcd"


@dataclass
class Node:
    node: KubeadmNode
    etcd: NodeEtcd
    repo: str

    @property
    def root(self) -> Path:
        return self.node.root

    def host(self, path: str) -> Path:
        return self.node.host(path)

    @property
    def flags(self) -> tuple[str, ...]:
        """``--root`` and ``--repo`` of a lifeboat command run on this node."""
        return ("--root", str(self.root), "--repo", self.repo)


@pytest.fixture
def kubeadm_node(release: EtcdRelease, pki: Pki, tmp_path: Path) -> object:
    node = make_kubeadm_node(tmp_path / "node")
    shutil.rmtree(node.host("/var/lib/etcd"))  # the fake node's decoy db
    install_etcd_client_files(node, pki.ca, pki.client.cert, pki.client.key,
                              "/etc/kubernetes/pki/etcd/healthcheck-client")
    etcd = NodeEtcd(release, "cp-1", tmp_path / "logs", pki, root=node.root)
    write(node.host("/etc/kubernetes/manifests/etcd.yaml"),
          etcd_manifest("cp-1", listen=etcd.client_url, advertise=etcd.client_url, peer=etcd.peer_url), 0o600)
    api_port = free_port()
    write(node.host("/etc/kubernetes/manifests/kube-apiserver.yaml"),
          APISERVER_YAML.format(ip="127.0.0.1").replace("--secure-port=6443", f"--secure-port={api_port}"), 0o600)
    kubelet = FakeKubelet(node.root, etcd, f"cp-1={etcd.peer_url}", "kubeadm-token", api_port)
    with kubelet:
        etcd_wait = time.monotonic() + 30
        while etcd.process is None and time.monotonic() < etcd_wait:
            time.sleep(0.05)
        etcd.wait_healthy()
        yield Node(node, etcd, f"file://{tmp_path / 'repo'}")
        assert not kubelet.errors


@pytest.mark.parametrize("writer", ["lifeboat", "tool"])
def test_kubeadm_node_restore_resumes_after_a_crash_and_rolls_back(
    kubeadm_node: Node, cli: Cli, pki: Pki, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    node = kubeadm_node
    restore_with = ("--restore-with", writer)
    url = node.etcd.client_url
    with client(url, pki) as c:
        load_keys(c, objects(300))
    before, backed_up_revision = keyspace(url, pki), revision(url, pki)
    backup = cli.json("backup", "--root", str(node.root), "--repo", node.repo)
    assert backup["snapshot"]["revision"] == backed_up_revision  # type: ignore[index]
    with client(url, pki) as c:
        c.delete_range(b"/registry/configmaps/ns-1/", prefix=True)
        c.put(b"/registry/configmaps/ns-9/after-backup", b"new")
    after = keyspace(url, pki)

    plan = cli.json("restore", "latest", "--root", str(node.root), "--repo", node.repo, "--dry-run", *restore_with)
    assert [s["key"] for s in plan["steps"]][:3] == ["preflight", "fetch-snapshot", "stop:kube-apiserver"]  # type: ignore[index]
    if writer == "tool":  # etcdutl 3.5.1 / etcdctl 3.4.23 have no --bump-revision: lifeboat bumps after them
        assert [s["key"] for s in plan["steps"]][5:8] == ["restore-data", "drop-snapshot", "bump-revision"]  # type: ignore[index]
        assert plan["revision_bump"]["by"] == "lifeboat"  # type: ignore[index]
    else:  # lifeboat writes the data dir and the bump in one commit into the snapshot, which becomes its db
        assert [s["key"] for s in plan["steps"]][5:8] == ["restore-data", "put-in-place", "start:etcd"]  # type: ignore[index]
        assert plan["revision_bump"]["tool"].startswith("lifeboat's own writer")  # type: ignore[index]
    assert keyspace(url, pki) == after  # a dry run changes nothing

    def crash(self: PutInPlace, ctx: object) -> None:
        raise KeyboardInterrupt  # lifeboat killed between two steps
    monkeypatch.setattr(PutInPlace, "run", crash)
    code, _out, _err = cli("restore", "latest", "--root", str(node.root), "--repo", node.repo, *restore_with)
    assert code == 130
    assert not node.host("/var/lib/etcd").exists()
    monkeypatch.undo()

    result = cli.json("restore", "latest", "--root", str(node.root), "--repo", node.repo, *restore_with)
    assert "restore-data" in result["skipped"] and "put-in-place" in result["ran"]  # type: ignore[operator]
    assert keyspace(url, pki) == before
    assert revision(url, pki) == backed_up_revision + 1_000_000_000  # lifeboat's bump
    with client(url, pki) as c, pytest.raises(RevisionCompacted):
        with c.watch(b"/registry/", prefix=True, start_revision=backed_up_revision) as stream:
            stream.next_event(timeout=10)
    moved = Path(str(result["moved_aside"]))
    assert moved.name.startswith("etcd.lifeboat-moved-")
    moved_keys = {kv.key: kv.value for kv in iter_latest(moved / "member/snap/db")}
    assert moved_keys == after  # the old data dir is intact, beside the restored one
    assert node.host("/etc/kubernetes/manifests/etcd.yaml").exists()
    assert node.host("/etc/kubernetes/manifests/kube-apiserver.yaml").exists()
    assert not node.host("/var/lib/etcd.lifeboat-work").exists()

    rolled = cli.json("restore", "--rollback", "--root", str(node.root))
    node.etcd.wait_healthy()
    assert keyspace(url, pki) == after
    assert not moved.exists() and Path(str(rolled["restored_set_aside"])).is_dir()


# lifeboat's own writer, SIGKILLed halfway through writing the WAL segment of the restored data dir.
_KILLED_WHILE_WRITING = """
import os, signal, sys
import lifeboat.restore.native as native
def killed(path, data, **kw):
    path.write_bytes(data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)
native._write_file = killed
from lifeboat.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def killed_restore(node: Node, cli: Cli, pki: Pki, script: str, **env: str) -> tuple[dict[bytes, bytes], int]:
    """Back up 100 keys, write one more, then run ``lifeboat restore latest`` under ``script``,
    which must SIGKILL it: the keyspace and revision that were backed up."""
    url = node.etcd.client_url
    with client(url, pki) as c:
        load_keys(c, objects(100))
    before, backed_up_revision = keyspace(url, pki), revision(url, pki)
    cli.json("backup", *node.flags, "--no-files")
    with client(url, pki) as c:
        c.put(b"/registry/configmaps/ns-9/after-backup", b"new")
    killed = subprocess.run([sys.executable, "-c", script, "restore", "latest", *node.flags],
                            capture_output=True, timeout=300, check=False, env={**os.environ, **env})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    return before, backed_up_revision


def test_a_restore_killed_while_lifeboat_writes_the_data_dir_resumes_and_never_puts_half_of_it_in_place(
    kubeadm_node: Node, cli: Cli, pki: Pki
) -> None:
    node = kubeadm_node
    url = node.etcd.client_url
    before, backed_up_revision = killed_restore(node, cli, pki, _KILLED_WHILE_WRITING)
    staging = node.host("/var/lib/etcd.lifeboat-work/data")
    assert (staging / "member/snap/db").is_file()  # the half-written output stays in lifeboat's work dir
    assert not node.host("/var/lib/etcd").exists()  # and nothing of it is in place

    result = cli.json("restore", "latest", *node.flags)
    assert "restore-data" in result["ran"]  # written again from the start
    assert keyspace(url, pki) == before
    assert revision(url, pki) == backed_up_revision + 1_000_000_000
    assert Path(str(result["moved_aside"])).name.startswith("etcd.lifeboat-moved-")


# lifeboat's own writer commits into the fetched snapshot and moves it into the data dir: SIGKILLed
# once what the commit overwrites is recorded, once its pages are written (before the meta), once
# it is committed (before the move), once it is moved (before the WAL).
_KILLED_IN_THE_COMMIT = """
import os, signal, sys
import lifeboat.restore.native as native
import lifeboat.snapshot.writer as writer
def kill(*args, **kw):
    os.kill(os.getpid(), signal.SIGKILL)
point = os.environ["KILL_AT"]
if point == "recorded":
    record = native.replace_durably
    native.replace_durably = lambda path, data: (record(path, data), kill())
elif point == "pages":
    writer.snapshot_sha256 = kill
elif point == "committed":
    rename = os.rename
    os.rename = lambda a, b: kill() if str(a).endswith("snapshot.db") else rename(a, b)
else:
    native.fsync_dir = kill
from lifeboat.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("point", ["recorded", "pages", "committed", "moved"])
def test_a_restore_killed_while_committing_into_the_snapshot_resumes_bumped_once(
    kubeadm_node: Node, cli: Cli, pki: Pki, point: str
) -> None:
    node = kubeadm_node
    url = node.etcd.client_url
    before, backed_up_revision = killed_restore(node, cli, pki, _KILLED_IN_THE_COMMIT, KILL_AT=point)
    work = node.host("/var/lib/etcd.lifeboat-work")
    assert (work / "snapshot.db.overwritten").is_file()  # what the commit overwrote, kept
    assert (work / "snapshot.db").is_file() != (point == "moved")
    assert not node.host("/var/lib/etcd").exists()  # nothing in place
    journal = json.loads(journal_path(node.host("/var/lib/etcd")).read_text())
    assert "restore-data" not in journal["done"] and not journal["finished"]

    result = cli.json("restore", "latest", *node.flags)
    assert "restore-data" in result["ran"]
    assert keyspace(url, pki) == before
    assert revision(url, pki) == backed_up_revision + 1_000_000_000  # bumped once, not twice
    assert not work.exists()


def test_tampered_backup_stops_before_touching_the_node(kubeadm_node: Node, cli: Cli, pki: Pki) -> None:
    node = kubeadm_node
    with client(node.etcd.client_url, pki) as c:
        load_keys(c, objects(50))
    backup = cli.json("backup", "--root", str(node.root), "--repo", node.repo, "--no-files")
    stored = next(Path(node.repo.removeprefix("file://")).rglob("snapshot.db.zst"))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    manifests = sorted(p.name for p in node.host("/etc/kubernetes/manifests").iterdir())

    code, _out, err = cli("restore", str(backup["id"]), "--root", str(node.root), "--repo", node.repo)
    assert code == 1 and "failed verification" in err and "nothing on the node was changed" in err
    assert sorted(p.name for p in node.host("/etc/kubernetes/manifests").iterdir()) == manifests
    assert not list(node.host("/var/lib").glob("etcd.lifeboat-moved-*"))
    assert node.etcd.healthy()


def test_a_forged_control_plane_archive_is_refused_before_etcd_is_stopped_and_never_installs_set_id_bits(
    kubeadm_node: Node, cli: Cli, pki: Pki
) -> None:
    # Backups are not signed: whoever may write the repository can forge a manifest and its archive.
    node = kubeadm_node
    repo_dir = Path(node.repo.removeprefix("file://"))
    with client(node.etcd.client_url, pki) as c:
        load_keys(c, objects(50))
    before = keyspace(node.etcd.client_url, pki)
    outside = cli.json("backup", *node.flags)
    forge_stored_backup(repo_dir, str(outside["id"]), Member("etc/cron.d/lifeboat", b"* * * * * root id\n"))
    manifests = sorted(p.name for p in node.host("/etc/kubernetes/manifests").iterdir())

    code, _out, err = cli("restore", str(outside["id"]), "--files", *node.flags)
    assert code == 1 and "holds /etc/cron.d/lifeboat, which is not a file lifeboat captures" in err, err
    assert not node.host("/etc/cron.d").exists()
    assert sorted(p.name for p in node.host("/etc/kubernetes/manifests").iterdir()) == manifests
    assert not list(node.host("/var/lib").glob("etcd.lifeboat-moved-*"))
    assert node.etcd.healthy()

    def set_uid(info: tarfile.TarInfo) -> None:
        if info.name == "etc/kubernetes/pki/ca.crt":
            info.mode = 0o4755
    set_id = cli.json("backup", *node.flags)
    forge_stored_backup(repo_dir, str(set_id["id"]), change=set_uid)
    node.host("/etc/kubernetes/pki/ca.crt").write_text("a CA made after the backup\n")
    result = cli.json("restore", str(set_id["id"]), "--files", *node.flags)
    assert "restore-files" in result["ran"]  # type: ignore[operator]
    ca = node.host("/etc/kubernetes/pki/ca.crt")
    assert ca.read_text() != "a CA made after the backup\n" and stat.S_IMODE(ca.stat().st_mode) == 0o755
    assert keyspace(node.etcd.client_url, pki) == before


def test_a_restore_of_files_killed_halfway_resumes_and_moves_aside_only_what_it_replaced(
    kubeadm_node: Node, cli: Cli, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = kubeadm_node
    with client(node.etcd.client_url, pki) as c:
        load_keys(c, objects(50))
    before = keyspace(node.etcd.client_url, pki)
    backup = cli.json("backup", *node.flags)
    node.host("/etc/kubernetes/admin.conf").write_text("edited after the backup\n")
    scheduler = node.host("/etc/kubernetes/manifests/kube-scheduler.yaml")
    scheduler.write_text(scheduler.read_text() + "# edited after the backup\n")
    node.host("/etc/kubernetes/super-admin.conf").unlink()
    real_install, installed = files_module._install, []

    def killed_after_five(*args: object, **kw: object) -> None:
        if len(installed) == 5:
            raise KeyboardInterrupt  # lifeboat killed while it puts the files back
        installed.append(args[1])
        real_install(*args, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(files_module, "_install", killed_after_five)
    assert cli("restore", str(backup["id"]), "--files", *node.flags)[0] == 130
    monkeypatch.undo()

    result = cli.json("restore", str(backup["id"]), "--files", *node.flags)
    assert "restore-files" in result["ran"]  # type: ignore[operator]
    assert keyspace(node.etcd.client_url, pki) == before
    asides = sorted(str(p.relative_to(node.root)) for p in node.host("/etc").rglob("*lifeboat-moved-*"))
    assert [a.split(".lifeboat-moved-")[0] for a in asides] == [
        "etc/kubernetes/admin.conf", "etc/kubernetes/manifests/.kube-scheduler.yaml"], asides
    assert node.host("/etc/kubernetes/super-admin.conf").is_file()
    assert "# edited after the backup" not in scheduler.read_text()


def test_restores_refused_before_they_changed_the_node_block_no_later_restore(
    kubeadm_node: Node, cli: Cli, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = kubeadm_node
    flags = ("--root", str(node.root), "--repo", node.repo)
    with client(node.etcd.client_url, pki) as c:
        load_keys(c, objects(50))
    before = keyspace(node.etcd.client_url, pki)
    good = cli.json("backup", *flags, "--no-files")
    bad = cli.json("backup", *flags, "--no-files")
    stored = next(Path(node.repo.removeprefix("file://")).rglob(f"{bad['id']}/snapshot.db.zst"))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    journal = journal_path(node.host("/var/lib/etcd"))

    code, _out, err = cli("restore", str(bad["id"]), *flags)
    assert code == 1 and "nothing on the node was changed" in err and journal.exists()

    def mount_point(self: Preflight, ctx: object) -> None:
        raise UsageError(f"--data-dir {self.data_dir} is a mount point and cannot be moved aside")
    monkeypatch.setattr(Preflight, "check", mount_point)
    code, _out, err = cli("restore", str(good["id"]), *flags)
    assert code == 3 and "mount point" in err  # refused for itself, not for the earlier restore
    monkeypatch.undo()

    code, out, _err = cli("restore", "--rollback", "--root", str(node.root))
    assert code == 0 and "nothing to roll back" in out
    assert not journal.exists() and not node.host("/var/lib/etcd.lifeboat-work").exists()
    assert node.etcd.healthy()

    assert cli("restore", str(bad["id"]), *flags)[0] == 1
    result = cli.json("restore", str(good["id"]), *flags)
    assert result["journal"] == str(journal)
    assert keyspace(node.etcd.client_url, pki) == before


def backed_up(node: Node, cli: Cli, pki: Pki) -> tuple[dict[bytes, bytes], dict[str, object]]:
    """50 objects written to the node's etcd and backed up (etcd only): the keyspace and the backup."""
    with client(node.etcd.client_url, pki) as c:
        load_keys(c, objects(50))
    return keyspace(node.etcd.client_url, pki), cli.json("backup", *node.flags, "--no-files")


def killed_before_restore_data(node: Node, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """``restore latest`` killed after the fetch, once etcd is stopped and its data dir moved aside,
    before the restored data dir is written."""
    def crash(self: RestoreData, ctx: object) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr(RestoreData, "run", crash)
    assert cli("restore", "latest", *node.flags)[0] == 130
    monkeypatch.undo()


def test_snapshot_damaged_on_disk_before_a_resumed_restore_is_refused(
    kubeadm_node: Node, cli: Cli, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = kubeadm_node
    before, _backup = backed_up(node, cli, pki)
    killed_before_restore_data(node, cli, monkeypatch)

    fetched = node.host("/var/lib/etcd.lifeboat-work/snapshot.db")
    data = bytearray(fetched.read_bytes())
    data[len(data) // 3] ^= 0x01  # the disk rots between the two runs
    fetched.write_bytes(bytes(data))
    code, _out, err = cli("restore", "latest", "--root", str(node.root), "--repo", node.repo)
    assert code == 1 and "sha256" in err and str(fetched) in err and "lifeboat restore --rollback" in err
    assert not node.host("/var/lib/etcd.lifeboat-work/data").exists()

    cli.json("restore", "--rollback", "--root", str(node.root))
    node.etcd.wait_healthy()
    assert keyspace(node.etcd.client_url, pki) == before


def test_a_resumed_restore_whose_backup_was_deleted_says_to_roll_back_and_restore_again(
    kubeadm_node: Node, cli: Cli, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = kubeadm_node
    _before, backup = backed_up(node, cli, pki)
    with client(node.etcd.client_url, pki) as c:
        c.put(b"/registry/configmaps/ns-9/after-backup", b"new")
    after = keyspace(node.etcd.client_url, pki)

    killed_before_restore_data(node, cli, monkeypatch)
    assert not node.host("/var/lib/etcd").exists()

    cli.json("delete", str(backup["id"]), "--yes", "--repo", node.repo)  # pruned between the two runs
    code, out, err = cli("restore", "latest", *node.flags)
    assert (code, out) == (1, "")
    line = err.strip().splitlines()[-1]
    assert f"backup {backup['id']} not found" in line, line
    assert "'lifeboat restore --rollback'" in line and "restore again" in line, line

    # What the error says to do: the rollback puts the node back as it was, and a restore of a
    # backup that exists runs.
    cli.json("restore", "--rollback", "--root", str(node.root))
    node.etcd.wait_healthy()
    assert keyspace(node.etcd.client_url, pki) == after
    cli.json("backup", *node.flags, "--no-files")
    cli.json("restore", "latest", *node.flags)
    assert keyspace(node.etcd.client_url, pki) == after


def test_three_member_cluster_that_lost_two_members_is_rebuilt_from_one_backup(
    release: EtcdRelease, pki: Pki, cli: Cli, tmp_path: Path
) -> None:
    repo = f"file://{tmp_path / 'repo'}"
    cluster = EtcdCluster(release, tmp_path / "etcd", size=3, pki=pki)
    with cluster:
        first = cluster.first()
        with client(first.client_url, pki) as c:
            load_keys(c, objects(400))
        before, backed_up_revision = keyspace(first.client_url, pki), revision(first.client_url, pki)
        tls = [f"--cacert={pki.ca}", f"--cert={pki.client.cert}", f"--key={pki.client.key}"]
        backup = cli.json("backup", f"--endpoints={first.client_url}", *tls, "--repo", repo, "--no-files")
        for lost in cluster.members[1:]:
            lost.kill()
            shutil.rmtree(lost.data_dir)
        first.stop()

        plan = cli.json("restore", "plan", str(backup["id"]), "--initial-cluster", cluster.initial_cluster,
                        "--repo", repo)
        commands = {m["name"]: m["argv"] for m in plan["members"]}  # type: ignore[union-attr]
        assert sorted(commands) == ["m0", "m1", "m2"]
        codes: dict[str, int] = {}

        def restore(member: EtcdMember) -> None:
            argv = list(commands[member.name][1:]) + [
                f"--data-dir={member.data_dir}", "--supervisor=none", f"--endpoints={member.client_url}",
                *tls, "--wait-timeout=60"]
            codes[member.name] = main(argv)

        def data_back_in_place(member: EtcdMember) -> bool:
            journal = journal_path(member.data_dir)
            try:
                return "put-in-place" in json.loads(journal.read_text())["done"]
            except (OSError, ValueError):
                return False  # not written yet, or being replaced

        def operator_starts_restored_members() -> None:
            # With --supervisor none the operator starts etcd once its data dir is back in place.
            pending = list(cluster.members)
            deadline = time.monotonic() + 90
            while pending and time.monotonic() < deadline:
                for member in [m for m in pending if data_back_in_place(m)]:
                    member.start(str(plan["initial_cluster"]), str(plan["token"]))
                    pending.remove(member)
                time.sleep(0.05)

        threads = [threading.Thread(target=restore, args=(m,)) for m in cluster.members]
        threads.append(threading.Thread(target=operator_starts_restored_members))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert codes == {"m0": 0, "m1": 0, "m2": 0}
        for member in cluster.members:
            assert keyspace(member.client_url, pki) == before
            assert revision(member.client_url, pki) == backed_up_revision + 1_000_000_000
        with client(first.client_url, pki) as c:
            members = {m.name: tuple(m.peer_urls) for m in c.member_list().members}
        assert members == {m.name: (m.peer_url,) for m in cluster.members}
        assert list((tmp_path / "etcd").glob("m0.etcd.lifeboat-moved-*"))  # the survivor's old data kept
        assert not list((tmp_path / "etcd").glob("m1.etcd.lifeboat-moved-*"))  # nothing was left to move


def test_restore_onto_a_member_of_another_cluster_is_refused_unless_forced(
    release: EtcdRelease, pki: Pki, cli: Cli, tmp_path: Path
) -> None:
    repo = f"file://{tmp_path / 'repo'}"
    tls = [f"--cacert={pki.ca}", f"--cert={pki.client.cert}", f"--key={pki.client.key}"]
    with EtcdCluster(release, tmp_path / "a", pki=pki, token="cluster-a") as a, \
            EtcdCluster(release, tmp_path / "s", pki=pki, token="cluster-s") as s:
        ours, theirs = a.first(), s.first()
        with client(ours.client_url, pki) as c:
            load_keys(c, objects(20, "a"))
        with client(theirs.client_url, pki) as c:
            load_keys(c, objects(20, "s"))
        own = cli.json("backup", f"--endpoints={ours.client_url}", *tls, "--repo", repo, "--cluster", "a",
                       "--no-files")
        other = cli.json("backup", f"--endpoints={theirs.client_url}", *tls, "--repo", repo, "--cluster", "s",
                         "--no-files")
        restore = ["restore", "--repo", repo, "--supervisor=none", f"--data-dir={ours.data_dir}", "--name=m0",
                   f"--initial-cluster=m0={ours.peer_url}", f"--initial-advertise-peer-urls={ours.peer_url}",
                   f"--endpoints={ours.client_url}", *tls, "--dry-run"]

        code, _out, err = cli(*restore[:1], "latest", *restore[1:])
        assert code == 3 and "'latest' is ambiguous" in err and "clusters a, s" in err

        code, _out, err = cli(*restore[:1], str(other["id"]), *restore[1:])  # the live member answers
        assert code == 1 and other["source"]["cluster_id"] in err  # type: ignore[index]
        assert "the etcd member running on this node belongs to cluster" in err and "--force" in err
        live_id = own["source"]["cluster_id"]  # type: ignore[index]
        assert live_id in err

        ours.stop()  # now only the data dir, read offline, says which cluster it is
        code, _out, err = cli(*restore[:1], str(other["id"]), *restore[1:])
        assert code == 1 and f"{ours.data_dir}/member/snap/db belongs to a cluster of members" in err
        assert cli(*restore[:1], str(other["id"]), *restore[1:], "--force")[0] == 0
        assert cli(*restore[:1], str(own["id"]), *restore[1:])[0] == 0
        code, _out, err = cli(*restore[:1], "latest", *restore[1:], "--cluster", "s")
        assert code == 1 and "refusing to replace another cluster's data" in err
        assert not journal_path(ours.data_dir).exists()


def test_running_a_finished_restore_again_says_it_is_done_and_changes_nothing(
    kubeadm_node: Node, cli: Cli, pki: Pki
) -> None:
    node, url = kubeadm_node, kubeadm_node.etcd.client_url
    with client(url, pki) as c:
        load_keys(c, objects(50))
    backup, restore = cli.json("backup", *node.flags), ("restore", "latest", *node.flags)
    cli.json(*restore)
    with client(url, pki) as c:
        c.put(b"/registry/configmaps/ns-9/after-restore", b"kept")  # the restored cluster goes on
    after = keyspace(url, pki)
    journal = journal_path(node.host("/var/lib/etcd")).read_bytes()

    code, out, err = cli(*restore)
    assert code == 0, err
    assert f"backup {backup['id']} was already restored" in out and "nothing was changed" in out
    again = cli.json(*restore)
    assert again["already_restored"] is True and again["ran"] == []  # type: ignore[index]
    assert keyspace(url, pki) == after
    assert journal_path(node.host("/var/lib/etcd")).read_bytes() == journal
    assert len(list(node.host("/var/lib").glob("etcd.lifeboat-moved-*"))) == 1  # only the first restore's

    code, out, _err = cli(*restore, "--dry-run")
    assert code == 0 and "already restored" in out
    forced = cli.json(*restore, "--force")  # asked for: a new restore, the current data moved aside
    assert "restore-data" in forced["ran"]  # type: ignore[operator]
    assert b"/registry/configmaps/ns-9/after-restore" not in keyspace(url, pki)
    assert len(list(node.host("/var/lib").glob("etcd.lifeboat-moved-*"))) == 2


@pytest.mark.parametrize("release", ["3.5"], indirect=True)
def test_a_restore_within_the_second_of_another_moves_the_data_dir_aside_under_a_name_of_its_own(
    kubeadm_node: Node, cli: Cli, pki: Pki
) -> None:
    # The moved-aside dir was named by the second alone: a restore in the same second as the
    # one before failed ("already exists"), and a control-plane file could be replaced unkept.
    node, url = kubeadm_node, kubeadm_node.etcd.client_url
    with client(url, pki) as c:
        load_keys(c, objects(20))
    cli.json("backup", *node.flags)
    now = datetime.now(timezone.utc)
    taken = [node.host("/var/lib") / f"etcd.lifeboat-moved-{utc_stamp(now + timedelta(seconds=s))}" for s in range(60)]
    for path in taken:
        path.mkdir()
        (path / "kept").write_text("an earlier restore's\n")

    cli.json("restore", "latest", *node.flags)

    moved = [p for p in node.host("/var/lib").glob("etcd.lifeboat-moved-*") if p not in taken]
    assert len(moved) == 1 and moved[0].name.endswith("-2") and (moved[0] / "member").is_dir()
    assert all((path / "kept").read_text() == "an earlier restore's\n" for path in taken)


@pytest.mark.parametrize("release", ["3.5"], indirect=True)
def test_encrypted_backup_restores_with_the_config_files_identity_and_the_flag_replaces_it(
    kubeadm_node: Node, cli: Cli, pki: Pki, tmp_path: Path
) -> None:
    # restore read only --identity: with the agent's config naming the key, it said it could not decrypt.
    node, url = kubeadm_node, kubeadm_node.etcd.client_url
    key, other = tmp_path / "age-key.txt", tmp_path / "other-key.txt"
    identity = pyrage.x25519.Identity.generate()
    key.write_text(f"{identity}\n")
    other.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"repository: {{url: '{node.repo}'}}\n"
                      f"encryption: {{recipients: ['{identity.to_public()}'], identity-files: ['{key}']}}\n")
    with client(url, pki) as c:
        load_keys(c, objects(50))
    before = keyspace(url, pki)
    backup = cli.json("backup", "--root", str(node.root), "--config", str(config), "--no-files")
    assert backup["encryption"] == "age"
    with client(url, pki) as c:
        c.delete_range(b"/registry/configmaps/ns-1/", prefix=True)

    code, _out, err = cli("restore", "latest", "--root", str(node.root), "--config", str(config),
                          "--identity", str(other))
    assert code == 3 and "decrypt" in err and "nothing on the node was changed" in err, err
    assert not list(node.host("/var/lib").glob("etcd.lifeboat-moved-*"))
    assert not node.host("/var/lib/etcd.lifeboat-work/snapshot.db").exists()  # what was fetched of it

    restored = cli.json("restore", "latest", "--root", str(node.root), "--config", str(config))
    assert "restore-data" in restored["ran"]  # type: ignore[operator]
    assert keyspace(url, pki) == before


@pytest.mark.parametrize("release", ["3.5"], indirect=True)
@pytest.mark.parametrize("writer", ["lifeboat", "tool"])
@pytest.mark.parametrize("keys", [0, 3])
def test_a_backup_of_a_cluster_of_no_or_a_few_keys_restores_and_refuses_old_watches(
    kubeadm_node: Node, cli: Cli, pki: Pki, writer: str, keys: int
) -> None:
    # With no key its snapshot holds no row (revision 0), while etcd serves such a store at
    # revision 1: the bumped restore must refuse a watch from 1, one from 0 meaning "from now".
    # With a few, bucket ``key`` is small enough to be kept inline in its parent's page.
    node, url = kubeadm_node, kubeadm_node.etcd.client_url
    with client(url, pki) as c:
        for n in range(keys):
            c.put(f"/registry/namespaces/ns-{n}".encode(), b"v")
    before = keyspace(url, pki)
    backup = cli.json("backup", *node.flags)
    backed_up = backup["snapshot"]["revision"]  # type: ignore[index]
    assert backed_up == (keys + 1 if keys else 0)  # a store starts at revision 1; its snapshot then has no row
    result = cli.json("restore", "latest", *node.flags, "--restore-with", writer)
    assert "verify-member" in result["ran"]  # type: ignore[operator]
    assert keyspace(url, pki) == before and revision(url, pki) == backed_up + 1_000_000_000
    with client(url, pki) as c, pytest.raises(RevisionCompacted):
        with c.watch(b"/", prefix=True, start_revision=max(backed_up, 1)) as stream:
            stream.next_event(timeout=10)

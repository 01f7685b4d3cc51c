"""`lifeboat verify ID --drill` against backups of real etcd 3.5.1 and 3.4.23."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from lifeboat.cli.main import main
from lifeboat.etcd import ConnectionSettings, EtcdClient
from lifeboat.etcd.binaries import SnapshotRestore
from lifeboat.restore import native
from lifeboat.restore.member_files import NewCluster
from lifeboat.snapshot import writer
from lifeboat.verify import drill as drill_module
from lifeboat.etcd.local import LocalEtcd
from tests.support.binaries import EtcdRelease
from tests.support.etcd import EtcdCluster
from tests.support.etcd_load import load_keys

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Backup:
    release: EtcdRelease
    repo: Path
    id: str
    revision: int
    compacted: bool


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def fill(client: EtcdClient, compact: bool) -> None:
    """Live, overwritten, deleted and leased keys; with ``compact``, a compaction mid-way."""
    load_keys(client, ((f"/registry/pods/ns-{i % 5}/p{i:04d}".encode(), b"v1-" + bytes([i % 251]) * 300)
                       for i in range(400)))
    for i in range(0, 400, 7):
        client.put(f"/registry/pods/ns-{i % 5}/p{i:04d}".encode(), b"v2")
    if compact:
        client.compact(client.put(b"/registry/marker", b"m"), physical=True)
    client.delete_range(b"/registry/pods/ns-3/", prefix=True)
    lease = client.lease_grant(3600)
    client.put(b"/registry/masterleases/10.0.0.1", b"lease-held", lease=lease)
    client.put(b"/registry/pods/ns-0/p0000", b"v3")


@pytest.fixture(scope="module", params=["3.5", "3.4"])
def backup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backup]:
    """One backup per release in a file repository; the 3.5 one was compacted before it."""
    release: EtcdRelease = request.getfixturevalue(f"release{request.param.replace('.', '')}")
    work = tmp_path_factory.mktemp(f"drill-{request.param}")
    compacted = request.param == "3.5"
    with EtcdCluster(release, work / "etcd") as cluster:
        member = cluster.first()
        with EtcdClient(ConnectionSettings((member.client_url,))) as client:
            fill(client, compacted)
        repo = work / "repo"
        code = main(["backup", f"--endpoints={member.client_url}", "--repo", f"file://{repo}",
                     "--no-files", "-o", "json"])
        assert code == 0
    manifest_path = next(repo.rglob("manifests/*.json"))
    manifest = json.loads(manifest_path.read_text())
    yield Backup(release, repo, manifest["id"], manifest["snapshot"]["revision"], compacted)


def drill_args(backup: Backup, tmp: Path, repo: Path | None = None) -> list[str]:
    tools = backup.release.etcdutl or backup.release.etcdctl
    return ["verify", backup.id, "--drill", "--repo", f"file://{repo or backup.repo}",
            "--tmp-dir", str(tmp), "--restore-tool", str(tools),
            "--etcd-binary", str(backup.release.etcd), "-o", "json"]


@pytest.fixture
def drill_tmp(tmp_path: Path) -> Path:
    path = tmp_path / "drills"
    path.mkdir()
    return path


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids of every throwaway etcd the drill starts."""
    pids: list[int] = []
    original = LocalEtcd.__enter__

    def recording(self: LocalEtcd) -> LocalEtcd:
        result = original(self)
        assert self.pid is not None
        pids.append(self.pid)
        return result

    monkeypatch.setattr(LocalEtcd, "__enter__", recording)
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_drill_of_a_good_backup_passes_and_reports_phases(
    backup: Backup, drill_tmp: Path, started: list[int], capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(capsys, *drill_args(backup, drill_tmp))
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] is True
    checks = {c["name"]: c for c in report["drill_checks"]}
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["revision"]["detail"] == f"{backup.revision} (snapshot: {backup.revision})"
    # 400 pods - 80 in ns-3 + masterlease (+ marker when compacted)
    live = 320 + 1 + (1 if backup.compacted else 0)
    assert checks["key count"]["detail"].startswith(f"{live} keys")
    assert checks["hash"]["detail"].startswith("HashKV ")
    bumped = checks["bumped restore"]["detail"]
    assert f"bumped by lifeboat: revision {backup.revision + 1_000_000_000} " in bumped
    assert f"a watch from revision {backup.revision} is refused as compacted" in bumped
    assert [p["name"] for p in report["phases"]] == [
        "fetch and verify", "read snapshot offline", "restore", "start etcd", "check", "stop etcd",
        "bumped restore", "start bumped etcd", "check bumped"]
    assert backup.release.version in report["etcd"]
    assert report["restore_with"] == "tool" and report["restore_tool"].startswith(("etcdutl ", "etcdctl "))
    assert len(started) == 2 and not any(alive(pid) for pid in started)
    assert list(drill_tmp.iterdir()) == []


def without_restore_tool(args: list[str]) -> list[str]:
    at = args.index("--restore-tool")
    return args[:at] + args[at + 2:]


def test_no_other_program_gets_the_throwaway_etcds_ports_while_the_drill_restores_into_it(
    backup: Backup, drill_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The drill's ports were only free when chosen: a program given one of them while the
    # snapshot was restored (minutes for a large one) made etcd fail with "address already in use".
    squatters: list[socket.socket] = []
    refused: list[int] = []
    restore = drill_module._member_restore

    def restore_while_another_program_binds(snapshot: Path, member: LocalEtcd,
                                            bump_revision: int | None = None) -> SnapshotRestore:
        for port in (member.client_port, member.peer_port):
            squatter = socket.socket()
            try:
                squatter.bind(("127.0.0.1", port))
                squatter.listen()
                squatters.append(squatter)
            except OSError:
                squatter.close()
                refused.append(port)
        return restore(snapshot, member, bump_revision)

    monkeypatch.setattr(drill_module, "_member_restore", restore_while_another_program_binds)
    try:
        code, out, err = run_cli(capsys, *drill_args(backup, drill_tmp))
    finally:
        for squatter in squatters:
            squatter.close()
    assert code == 0, err
    assert json.loads(out)["ok"] is True
    assert len(refused) == 4 and not squatters  # both ports of both throwaway members


@pytest.mark.parametrize("choice", [(), ("--restore-tool", "--restore-with", "lifeboat")])
def test_drill_writes_the_data_dirs_as_lifeboat_restore_does_by_default(
    backup: Backup, drill_tmp: Path, started: list[int], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], choice: tuple[str, ...],
) -> None:
    written: list[tuple[SnapshotRestore, bool]] = []
    original = native.write_member_data_dir

    def recording(restore: SnapshotRestore, *, conf_state_in_wal: bool, in_place: bool = False) -> NewCluster:
        written.append((restore, in_place))
        return original(restore, conf_state_in_wal=conf_state_in_wal, in_place=in_place)

    monkeypatch.setattr(native, "write_member_data_dir", recording)
    args = drill_args(backup, drill_tmp)
    if not choice:  # no flag: lifeboat's writer, as 'lifeboat restore' chooses with no flag
        args = without_restore_tool(args)
    else:
        args += ["--restore-with", "lifeboat"]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] is True and report["restore_with"] == "lifeboat"
    minor = ".".join(backup.release.version.split(".")[:2])
    assert report["restore_tool"].startswith(f"lifeboat's own writer (etcd {minor}'s data dir")
    checks = {c["name"]: c for c in report["drill_checks"]}
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["restore"]["detail"] == "lifeboat's writer restored into a temp dir"
    assert checks["revision"]["detail"] == f"{backup.revision} (snapshot: {backup.revision})"
    assert checks["hash"]["detail"].startswith("HashKV ")
    bumped = checks["bumped restore"]["detail"]
    assert f"bumped by lifeboat's writer: revision {backup.revision + 1_000_000_000} " in bumped
    assert f"a watch from revision {backup.revision} is refused as compacted" in bumped
    # Both restores, the bump in one pass; the second, the snapshot's last reader, commits into it
    # (as 'lifeboat restore' does) instead of copying it.
    assert [(w.bump_revision, in_place) for w, in_place in written] == [(None, False), (1_000_000_000, True)]
    assert len(started) == 2 and not any(alive(pid) for pid in started)
    assert list(drill_tmp.iterdir()) == []


def test_a_drill_whose_restore_finds_the_disk_full_says_so_with_exit_5_not_a_failed_backup(
    backup: Backup, drill_tmp: Path, started: list[int], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The room was there when the drill asked; something else filled the disk meanwhile.
    monkeypatch.setattr(writer, "shutil", SimpleNamespace(disk_usage=lambda path: SimpleNamespace(free=0)))
    code, out, err = run_cli(capsys, *without_restore_tool(drill_args(backup, drill_tmp)))
    assert code == 5, err
    assert "not enough disk space" in err and "FAILED" not in out + err
    assert started == [] and list(drill_tmp.iterdir()) == []


def flip_a_value(data_dir: Path) -> None:
    """Change one byte of pod p0001's value in the restored db (bbolt keeps no checksums)."""
    db = data_dir / "member" / "snap" / "db"
    data = db.read_bytes()
    value = b"v1-" + bytes([1]) * 16
    assert value in data
    db.write_bytes(data.replace(value, b"v1+" + bytes([1]) * 16))


def cut_the_wal(data_dir: Path) -> None:
    """Leave the restored WAL segment empty: the member's cluster and raft state are gone."""
    for segment in (data_dir / "member" / "wal").glob("*.wal"):
        segment.write_bytes(b"")


@pytest.mark.parametrize("fault", [flip_a_value, cut_the_wal])
def test_drill_fails_when_lifeboats_writer_writes_a_wrong_data_dir(
    backup: Backup, drill_tmp: Path, started: list[int], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], fault: object,
) -> None:
    original = native.write_member_data_dir

    def broken(restore: SnapshotRestore, *, conf_state_in_wal: bool, in_place: bool = False) -> NewCluster:
        cluster = original(restore, conf_state_in_wal=conf_state_in_wal, in_place=in_place)
        fault(restore.data_dir)  # type: ignore[operator]
        return cluster

    monkeypatch.setattr(native, "write_member_data_dir", broken)
    code, out, err = run_cli(capsys, *drill_args(backup, drill_tmp), "--restore-with", "lifeboat")
    assert code == 1 and "drill of backup" in err
    report = json.loads(out)
    assert report["ok"] is False and report["restore_with"] == "lifeboat"
    failed = {c["name"] for c in report["drill_checks"] if not c["ok"]}
    if fault is flip_a_value:  # etcd starts and serves the wrong value
        assert {"sampled key/values", "bumped restore"} <= failed
        if not backup.compacted:
            assert "hash" in failed
    else:  # etcd does not serve at all
        assert failed == {"drill"}
    assert not any(alive(pid) for pid in started)
    assert list(drill_tmp.iterdir()) == []


def test_drill_fails_before_starting_etcd_when_the_db_committed_into_the_snapshot_lost_its_rows(
    backup: Backup, drill_tmp: Path, started: list[int], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The bumped restore commits into the snapshot file: its new pages are compared with the
    snapshot's tree offline, as 'lifeboat restore' compares them, before etcd is started."""
    original = native.write_member_data_dir

    def changing_the_newest_row(restore: SnapshotRestore, *, conf_state_in_wal: bool,
                                in_place: bool = False) -> NewCluster:
        cluster = original(restore, conf_state_in_wal=conf_state_in_wal, in_place=in_place)
        if in_place:  # the last put (p0000's "v3") is on the new right-most leaf, past the snapshot's pages
            db = restore.data_dir / "member" / "snap" / "db"
            data = bytearray(db.read_bytes())
            at = data.rfind(b"\x2a\x02v3")  # KeyValue.value (field 5), 2 bytes
            assert at > 0
            data[at + 3] = ord("4")
            db.write_bytes(bytes(data))
        return cluster

    monkeypatch.setattr(native, "write_member_data_dir", changing_the_newest_row)
    code, out, err = run_cli(capsys, *drill_args(backup, drill_tmp), "--restore-with", "lifeboat")
    assert code == 1 and "the db committed into the snapshot differs from it (rows differ" in err, err
    report = json.loads(out)
    assert [c["name"] for c in report["drill_checks"] if not c["ok"]] == ["drill"]
    assert len(started) == 1 and not any(alive(pid) for pid in started)  # the bumped etcd never started
    assert list(drill_tmp.iterdir()) == []


def test_drill_waits_for_the_throwaway_etcd_by_the_size_of_its_db(
    backup: Backup, drill_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """etcd indexes every revision before it serves: a fixed 60 s failed the drill of an 8 GiB db."""
    waits: list[float] = []
    original = LocalEtcd.wait_ready

    def recording(self: LocalEtcd, timeout: float, *args: object, **kwargs: object) -> None:
        waits.append(timeout)
        original(self, timeout, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(LocalEtcd, "wait_ready", recording)
    sizes: list[int] = []
    original_timeout = drill_module.ready_timeout_for

    def sized(db_bytes: int) -> float:
        sizes.append(db_bytes)
        return original_timeout(db_bytes)

    monkeypatch.setattr(drill_module, "ready_timeout_for", sized)
    code, _out, err = run_cli(capsys, *drill_args(backup, drill_tmp))
    assert code == 0, err
    assert len(sizes) == 1 and sizes[0] > 0
    assert waits == [original_timeout(sizes[0])] * 2
    assert original_timeout(8 << 30) == 300.0  # the 8 GiB db: five minutes
    assert original_timeout(0) == drill_module.READY_TIMEOUT


def test_drill_of_a_tampered_backup_fails_before_starting_etcd(
    backup: Backup, drill_tmp: Path, tmp_path: Path, started: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = tmp_path / "tampered"
    shutil.copytree(backup.repo, repo)
    stored = next(p for p in repo.rglob("snapshot.db*") if p.is_file())
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))

    code, out, err = run_cli(capsys, *drill_args(backup, drill_tmp, repo))
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert report["drill_checks"] == []
    assert "failed verification, not restored" in err
    assert started == []
    assert list(drill_tmp.iterdir()) == []


def test_drill_stops_etcd_and_removes_its_files_when_a_check_fails(
    backup: Backup, drill_tmp: Path, started: list[int], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def failing_check(report: drill_module.DrillReport, *args: object) -> None:
        report.add("sampled key/values", False, "1 of 500 differ, e.g. b'/registry/x'")

    monkeypatch.setattr(drill_module, "check_restored", failing_check)
    code, out, err = run_cli(capsys, *drill_args(backup, drill_tmp))
    assert code == 1
    assert "drill of backup" in err and "sampled key/values" in err
    assert json.loads(out)["ok"] is False
    assert len(started) == 2 and not any(alive(pid) for pid in started)
    assert list(drill_tmp.iterdir()) == []


def test_drill_stops_etcd_when_a_check_raises(
    backup: Backup, drill_tmp: Path, started: list[int], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def exploding_check(*args: object) -> None:
        raise RuntimeError("a bug in a check")

    monkeypatch.setattr(drill_module, "check_restored", exploding_check)
    code, _out, err = run_cli(capsys, *drill_args(backup, drill_tmp))
    assert code == 4 and "a bug in a check" in err
    assert len(started) == 1 and not alive(started[0])
    assert list(drill_tmp.iterdir()) == []


def test_drill_detects_a_restored_etcd_that_differs_from_the_snapshot(
    backup: Backup, drill_tmp: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Skew what the snapshot is said to hold, so every comparison has something to catch.
    original = drill_module.read_snapshot_facts

    def skewed(snapshot: Path, revision: int, sample_size: int) -> drill_module.SnapshotFacts:
        facts = original(snapshot, revision, sample_size)
        first = dataclasses.replace(facts.sample[0], value=b"not what etcd has")
        wrong_hash = dataclasses.replace(facts.hash_kv, hash=(facts.hash_kv.hash or 0) ^ 1)
        return dataclasses.replace(facts, live_keys=facts.live_keys + 1, hash_kv=wrong_hash,
                                   sample=(first, *facts.sample[1:]))

    monkeypatch.setattr(drill_module, "read_snapshot_facts", skewed)
    code, out, _err = run_cli(capsys, *drill_args(backup, drill_tmp))
    assert code == 1
    failed = {c["name"] for c in json.loads(out)["drill_checks"] if not c["ok"]}
    assert failed - {"bumped restore"} == {"key count", "hash", "sampled key/values"}


def test_drill_detects_a_bump_that_etcd_does_not_honour(
    backup: Backup, drill_tmp: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def no_bump(db: Path, amount: int) -> None:
        pass  # a "bump" that leaves the restored db as it was

    monkeypatch.setattr(drill_module, "bump_restored_db", no_bump)
    code, out, _err = run_cli(capsys, *drill_args(backup, drill_tmp))
    assert code == 1
    checks = {c["name"]: c for c in json.loads(out)["drill_checks"]}
    assert [name for name, c in checks.items() if not c["ok"]] == ["bumped restore"]
    assert "ACCEPTED" in checks["bumped restore"]["detail"]


@pytest.mark.parametrize("version", ["3.5", "3.4"])
def test_drill_of_a_backup_of_an_empty_cluster_passes(
    version: str, request: pytest.FixtureRequest, tmp_path: Path, drill_tmp: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A new cluster backed up before anything was written: its snapshot holds no key row (its
    # revision reads as 0) while etcd serves it at revision 1, the revision a store starts at.
    release: EtcdRelease = request.getfixturevalue(f"release{version.replace('.', '')}")
    with EtcdCluster(release, tmp_path / "etcd") as cluster:
        code = main(["backup", f"--endpoints={cluster.first().client_url}", "--repo", f"file://{tmp_path / 'repo'}",
                     "--no-files", "-o", "json"])
        assert code == 0
    manifest = json.loads(next((tmp_path / "repo").rglob("manifests/*.json")).read_text())
    empty = Backup(release, tmp_path / "repo", manifest["id"], manifest["snapshot"]["revision"], False)
    code, out, err = run_cli(capsys, *drill_args(empty, drill_tmp))
    report = json.loads(out)
    assert code == 0 and report["ok"], [c for c in report["drill_checks"] if not c["ok"]]
    checks = {c["name"]: c for c in report["drill_checks"]}
    assert checks["key count"]["detail"].startswith("0 keys")


def drill_etcds(under: Path) -> list[int]:
    """Pids of the etcd processes serving a data dir under ``under``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].rsplit(b"/", 1)[-1] == b"etcd" and any(arg.startswith(b"--data-dir=" + bytes(under))
                                                              for arg in argv):  # not the restore tool
                found.append(int(entry.name))
    return found


def test_a_drill_killed_while_its_throwaway_etcd_runs_takes_that_etcd_with_it(
    backup: Backup, drill_tmp: Path,
) -> None:
    drill = subprocess.Popen([sys.executable, "-m", "lifeboat.cli.main", *drill_args(backup, drill_tmp)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (etcds := drill_etcds(drill_tmp)) and time.monotonic() < deadline and drill.poll() is None:
            time.sleep(0.02)
        assert etcds, "the drill started no etcd"
        drill.send_signal(signal.SIGKILL)  # no cleanup of its own can run
        drill.wait()
        deadline = time.monotonic() + 10
        while drill_etcds(drill_tmp) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert drill_etcds(drill_tmp) == [], "the throwaway etcd outlived the drill"
    finally:
        drill.kill()
        for pid in drill_etcds(drill_tmp):
            os.kill(pid, signal.SIGKILL)

"""`lifeboat capture` against real etcd 3.5 and 3.4, into a directory and into S3."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lifeboat.catalog.chains import ChainStore
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.timeline import build_timeline
from lifeboat.errors import LifeboatError
from lifeboat.etcd import ConnectionSettings, EtcdClient, EventType
from lifeboat.store import open_store
from tests.support.binaries import EtcdRelease
from tests.support.capture_workload import capture_options, capturing, wait_for, write_history
from tests.support.cli import Cli
from tests.support.etcd import EtcdCluster, EtcdMember

pytestmark = pytest.mark.integration


def open_repo(url: str) -> BackupRepository:
    return BackupRepository.open(open_store(url, dict(os.environ)), create=True)


def captured_events(repo: BackupRepository, cluster: str) -> list[tuple[int, int, str, bytes, bytes, int, int, int, int]]:
    store = ChainStore(repo.store)
    rows = []
    for listing in store.chains(cluster):
        for ref in listing.segments:
            segment = store.read_segment(cluster, listing.info.chain, ref, None)
            for rev in segment.revisions:
                for sub, e in enumerate(rev.events):
                    kv = e.kv
                    rows.append((rev.revision, sub, e.type.value, kv.key, kv.value, kv.create_revision,
                                 kv.mod_revision, kv.version, kv.lease))
    return rows


def etcd_events(client: EtcdClient, after: int, up_to: int) -> list[tuple[int, int, str, bytes, bytes, int, int, int, int]]:
    """etcd's own history, read back with a fresh watch: the oracle for what capture stored."""
    rows: list[tuple[int, int, str, bytes, bytes, int, int, int, int]] = []
    with client.watch(b"", prefix=True, start_revision=after + 1) as stream:
        while not rows or rows[-1][0] < up_to:
            batch = stream.next_batch(timeout=30)
            assert batch, "etcd's watch stopped before the end of the history"
            for event in batch:
                kv = event.kv
                sub = rows[-1][1] + 1 if rows and rows[-1][0] == kv.mod_revision else 0
                rows.append((kv.mod_revision, sub, event.type.value, kv.key, kv.value, kv.create_revision,
                             kv.mod_revision, kv.version, kv.lease))
    # A response from etcd's history holds many revisions: the last batch can reach past up_to.
    return [row for row in rows if row[0] <= up_to]


def test_capture_stores_every_event_of_puts_deletes_txns_and_leases(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path) -> None:
    repo = open_repo(str(tmp_path / "repo"))
    options = capture_options("prod", etcd.client_url, tmp_path / "spool", flush_interval=0.3)
    client.put("/before/base", b"x")
    with capturing(client, repo, options) as status:
        wait_for(lambda: status.chain is not None)
        early = write_history(client, 6, tag="early")
        # Once these are committed the next writes go to another segment (a fixed sleep was not
        # enough when the capture thread waited for a CPU).
        wait_for(lambda: status.last_revision >= early.revisions[-1])
        history = write_history(client, 6, tag="late")
        wait_for(lambda: status.last_revision >= history.revisions[-1])
    chain = ChainStore(repo.store).chains("prod")
    assert len(chain) == 1 and chain[0].gap is None
    base = chain[0].info.base_revision
    stored = captured_events(repo, "prod")
    assert stored[0][0] == base + 1
    assert stored == etcd_events(client, base, history.revisions[-1])
    assert status.segments >= 2, "a flush interval of 0.3 s over this run gives several segments"
    segments = chain[0].segments
    assert all(b.first_revision == a.last_revision + 1 for a, b in zip(segments, segments[1:]))


def test_restarted_capture_resumes_after_last_segment_without_gap_or_duplicate(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, cli: Cli) -> None:
    repo = open_repo(str(tmp_path / "repo"))
    options = capture_options("prod", etcd.client_url, tmp_path / "spool", flush_interval=0.2)
    with capturing(client, repo, options) as status:
        first = write_history(client, 3, tag="one")
        wait_for(lambda: status.last_revision >= first.revisions[-1])
    written_while_stopped = write_history(client, 3, tag="gap")
    with capturing(client, repo, options) as status:
        wait_for(lambda: status.last_revision >= written_while_stopped.revisions[-1])
        assert status.bases == 0, "resuming must not take a new base"
    chains = ChainStore(repo.store).chains("prod")
    assert len(chains) == 1
    timeline = build_timeline("prod", list(repo.manifests("prod")), chains)
    assert timeline.gaps == ()
    assert [w.last_revision for w in timeline.windows] == [written_while_stopped.revisions[-1]]
    revisions = [row[:2] for row in captured_events(repo, "prod")]
    assert len(revisions) == len(set(revisions)), "an event was stored twice"
    (listed,) = cli.json("list", "--repo", str(tmp_path / "repo"))
    assert listed["window_end"]["revision"] == written_while_stopped.revisions[-1]


def test_a_capture_of_another_etcd_cluster_under_the_same_name_leaves_the_live_chain_alone(
        etcd: EtcdMember, client: EtcdClient, release35: EtcdRelease, tmp_path: Path) -> None:
    """Two etcd clusters captured under one cluster name into one repository: the second must not
    cut the first's chain with a gap ("etcd is now cluster ...") while the first still writes
    it; it waits, saying why, and the first's window goes on whole."""
    repo = open_repo(str(tmp_path / "repo"))
    options = capture_options("prod", etcd.client_url, tmp_path / "spool", flush_interval=0.2)
    with capturing(client, repo, options) as first:
        wait_for(lambda: first.chain is not None)
        with EtcdCluster(release35, tmp_path / "other") as other:
            stranger = other.first()
            with EtcdClient(ConnectionSettings((stranger.client_url,))) as other_client:
                second_options = capture_options("prod", stranger.client_url, tmp_path / "spool-2", flush_interval=0.2)
                with capturing(other_client, repo, second_options) as second:
                    wait_for(lambda: any("its own --cluster" in error for error in second.errors))
                    written = write_history(client, 3, tag="still")
                    wait_for(lambda: first.last_revision >= written.revisions[-1])
                    assert second.chain is None and second.bases == 0
    (chain,) = ChainStore(repo.store).chains("prod")
    assert chain.gap is None, f"the live chain was cut: {chain.gap}"
    assert chain.info.chain == first.chain


def test_compaction_past_the_capture_point_records_a_gap_and_starts_a_new_chain(
        etcd: EtcdMember, client: EtcdClient, tmp_path: Path, cli: Cli) -> None:
    repo_url = str(tmp_path / "repo")
    repo = open_repo(repo_url)
    options = capture_options("prod", etcd.client_url, tmp_path / "spool", flush_interval=0.2)
    with capturing(client, repo, options) as status:
        first = write_history(client, 2, tag="one")
        wait_for(lambda: status.last_revision >= first.revisions[-1])
    lost = write_history(client, 2, tag="lost")
    client.compact(lost.revisions[-1])
    with capturing(client, repo, options) as status:
        wait_for(lambda: status.bases == 1 and status.chain is not None)
        after = write_history(client, 2, tag="after")
        wait_for(lambda: status.last_revision >= after.revisions[-1])
    chains = ChainStore(repo.store).chains("prod")
    assert len(chains) == 2
    assert chains[0].gap is not None and "compacted" in chains[0].gap.reason
    assert chains[0].gap.last_revision == first.revisions[-1]
    timeline = cli.json("timeline", "--repo", repo_url, "--cluster", "prod")
    gaps = timeline[0]["gaps"]
    assert len(gaps) == 1
    assert gaps[0]["after_revision"] == first.revisions[-1]
    assert gaps[0]["before_revision"] == chains[1].info.base_revision
    assert "compacted" in gaps[0]["reason"]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_capture_command_refuses_a_second_capture_and_commits_what_it_has_on_sigterm(
        release35: EtcdRelease, tmp_path: Path, s3_repo: str, cli: Cli, stop: signal.Signals) -> None:
    # SIGHUP (the terminal it ran in closed) killed it by its default action: nothing committed
    # of what it held, the lock left to expire.
    with EtcdCluster(release35, tmp_path / "etcd") as cluster, \
            EtcdClient(ConnectionSettings((cluster.first().client_url,))) as client:
        env = dict(os.environ)
        command = [sys.executable, "-m", "lifeboat.cli.main", "capture", "--repo", s3_repo, "--cluster", "prod",
                   "--endpoints", cluster.first().client_url, "--no-files", "--flush-interval", "30s",
                   "--spool-dir", str(tmp_path / "spool"), "-o", "json"]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: _has_chain(s3_repo), timeout=60)
            # A second capture of the cluster, run by hand too: refused, naming the first.
            second = subprocess.run(command, env=env, capture_output=True, timeout=60)
            last = client.put("/registry/last", b"written just before SIGTERM")
            process.send_signal(stop)
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
        assert second.returncode == 1, second.stderr.decode()
        assert second.stderr.decode().count("\n") == 1
        assert (f"another capture of cluster prod is running: lifeboat capture on {socket.gethostname()} "
                f"(pid {process.pid})") in second.stderr.decode()
        assert process.returncode == 0, err.decode()
        assert client.get("/lifeboat/prod/capture") is None, "the lock is released on SIGTERM, not left to expire"
        repo = open_repo(s3_repo)
        assert len(ChainStore(repo.store).chains("prod")) == 1
        assert len(list(repo.manifests("prod"))) == 1, "the refused capture took no base backup"
        events = captured_events(repo, "prod")
        assert events[-1][0] == last and events[-1][3] == b"/registry/last"
    # Stopped, its chain stays open for the next capture to continue: "open", not "capturing".
    code, out, _err = cli("timeline", "--repo", s3_repo, "--cluster", "prod")
    assert code == 0 and "capturing" not in out and out.splitlines()[-1].split()[-1] == "open", out
    code, out, _err = cli("list", "--repo", s3_repo, "--cluster", "prod")
    assert code == 0 and "capturing" not in out and "chain open" in out, out


def _answers(client: EtcdClient) -> bool:
    try:
        client.put("/registry/ready", b"")
        return True
    except LifeboatError:
        return False


def _has_chain(url: str) -> bool:
    try:
        return bool(ChainStore(open_repo(url).store).chains("prod"))
    except Exception:
        return False


def test_etcd_killed_under_the_watch_and_restarted_continues_the_same_chain(
        release: EtcdRelease, tmp_path: Path) -> None:
    with EtcdCluster(release, tmp_path / "etcd") as cluster:
        member = cluster.first()
        with EtcdClient(ConnectionSettings((member.client_url,), dial_timeout=1.0)) as client:
            repo = open_repo(str(tmp_path / "repo"))
            options = capture_options("prod", member.client_url, tmp_path / "spool", flush_interval=0.2)
            with capturing(client, repo, options) as status:
                wait_for(lambda: status.chain is not None)
                before = write_history(client, 2, tag="before")
                wait_for(lambda: status.last_revision >= before.revisions[-1])
                member.kill()
                # Restart only once capture has seen its watch end (it retries meanwhile).
                wait_for(lambda: any("watch ended" in e or "etcd" in e for e in status.errors))
                member.start(cluster.initial_cluster, cluster.token)
                member.wait_healthy()
                wait_for(lambda: _answers(client))  # a restarted member may still be electing itself
                after = write_history(client, 2, tag="after")
                wait_for(lambda: status.last_revision >= after.revisions[-1], timeout=60)
            assert status.bases == 1 and status.gaps == 0
            assert any("watch ended" in e or "etcd" in e for e in status.errors)
            chains = ChainStore(repo.store).chains("prod")
            assert len(chains) == 1 and chains[0].gap is None
            assert captured_events(repo, "prod") == etcd_events(client, chains[0].info.base_revision,
                                                                after.revisions[-1])


def _captured_up_to(url: str) -> int:
    try:
        chains = ChainStore(open_repo(url).store).chains("prod")
    except Exception:
        return 0
    return chains[-1].segments[-1].last_revision if chains and chains[-1].segments else 0


def _started_once_the_lock_is_free(command: list[str], timeout: float = 30) -> subprocess.Popen[bytes]:
    """Start ``command`` as a restarting service would: again while it is refused (the killed
    capture's lock is held until its lease expires)."""
    deadline = time.monotonic() + timeout
    while True:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _, err = process.communicate(timeout=3)
        except subprocess.TimeoutExpired:
            return process  # still running: it holds the lock
        assert b"another capture of cluster prod is running" in err, err.decode()
        assert time.monotonic() < deadline, "the killed capture's lock was not freed within its lease"
        time.sleep(0.2)


def test_capture_killed_with_sigkill_mid_stream_and_run_again_stores_every_event_once(
        release35: EtcdRelease, tmp_path: Path, s3_repo: str) -> None:
    """`lifeboat capture` SIGKILLed while writes go on (it reads etcd in passes every 0.1 s, so
    the kill lands in or between passes, with a segment half filled), then started again as a
    service would be: one chain, no gap, and every event etcd wrote stored exactly once."""
    config = tmp_path / "lifeboat.yaml"
    config.write_text("agent:\n  lease-ttl: 2s\n")  # the capture lock's lease
    with EtcdCluster(release35, tmp_path / "etcd") as cluster, \
            EtcdClient(ConnectionSettings((cluster.first().client_url,))) as client:
        command = [sys.executable, "-m", "lifeboat.cli.main", "capture", "--config", str(config),
                   "--repo", s3_repo, "--cluster", "prod", "--endpoints", cluster.first().client_url,
                   "--no-files", "--flush-interval", "200ms", "--spool-dir", str(tmp_path / "spool"), "-o", "json"]
        written: list[int] = []
        writing = threading.Event()
        writing.set()

        def write() -> None:
            n = 0
            while writing.is_set():
                written.append(client.put(f"/registry/killed/{n % 40:02d}", f"v{n}".encode()))
                n += 1
                time.sleep(0.004)

        first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        writer = threading.Thread(target=write, name="test-writer", daemon=True)
        second: subprocess.Popen[bytes] | None = None
        try:
            wait_for(lambda: _has_chain(s3_repo), timeout=60)  # its base backup taken
            writer.start()
            wait_for(lambda: len(written) > 200 and _captured_up_to(s3_repo) >= written[100], timeout=60)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            killed_at = written[-1]
            committed_at_kill = _captured_up_to(s3_repo)
            second = _started_once_the_lock_is_free(command)
            wait_for(lambda: len(written) > 0 and written[-1] > killed_at + 200, timeout=60)
            writing.clear()
            writer.join(timeout=10)
            last = written[-1]
            wait_for(lambda: _captured_up_to(s3_repo) >= last, timeout=60)
            second.send_signal(signal.SIGTERM)
            _, err = second.communicate(timeout=60)
        finally:
            writing.clear()
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.kill()
        assert first.returncode == -signal.SIGKILL
        assert committed_at_kill < killed_at, "the kill left writes the killed capture had not committed"
        assert second.returncode == 0, err.decode()
        repo = open_repo(s3_repo)
        chains = ChainStore(repo.store).chains("prod")
        assert len(chains) == 1 and chains[0].gap is None, "the restarted capture continued the chain"
        assert build_timeline("prod", list(repo.manifests("prod")), chains).gaps == ()
        stored = captured_events(repo, "prod")
        assert stored == etcd_events(client, chains[0].info.base_revision, stored[-1][0]), \
            "every event of etcd's history once, in order: none lost at the kill, none stored twice"
        assert stored[-1][0] >= last and set(written) <= {row[0] for row in stored}

"""The test controllers themselves work: a real etcd over mTLS starts, answers, and stops; a
server that loses the race for its port starts again on new ones."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.binaries import EtcdRelease, weed
from tests.support.etcd import EtcdCluster
from tests.support.pki import Pki
from tests.support.seaweed import SeaweedServer
from tests.unit.test_waits import alive, still_alive


def test_mtls_member_serves_puts_and_stops(release: EtcdRelease, pki: Pki, tmp_path: Path) -> None:
    with EtcdCluster(release, tmp_path, pki=pki) as cluster:
        m = cluster.first()
        m.etcdctl("put", "/registry/x", "y")
        assert m.etcdctl("get", "/registry/x", "--print-value-only").strip() == "y"
        proc = m.process
    assert proc is not None and proc.poll() is not None


@pytest.mark.parametrize("port", ["client_port", "peer_port"])
def test_a_cluster_whose_port_was_taken_starts_on_new_ports(
    release: EtcdRelease, tmp_path: Path, port: str
) -> None:
    cluster = EtcdCluster(release, tmp_path, size=3)
    second = cluster.members[1]
    with taken_port() as squatted:
        setattr(second, port, squatted)  # as if another process bound it after free_port()
        with cluster:
            assert getattr(second, port) != squatted
            second.etcdctl("put", "/registry/x", "y")
            assert all(m.healthy() for m in cluster.members)
    assert "address already in use" in second.log_path.read_text()


def test_a_seaweed_whose_port_was_taken_starts_on_new_ports(tmp_path: Path) -> None:
    with taken_port() as squatted:
        server = SeaweedServer(weed(), tmp_path, s3_port=squatted)
        with server:
            assert server.s3_port != squatted
            assert server.s3().pending_multipart_uploads() == []


def test_a_seaweed_in_a_relative_work_dir_serves_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # weed runs in its work dir: a relative -s3.config (bench_restore.py --work bench-work/x)
    # named a file that is not there from it, and weed never served.
    monkeypatch.chdir(tmp_path)
    with SeaweedServer(weed(), Path("seaweed")) as server:
        assert server.s3().pending_multipart_uploads() == []
    assert (tmp_path / "seaweed" / "identities.json").is_file()


@contextmanager
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


SERVERS_OF_A_KILLED_RUN = """
import sys, time
from pathlib import Path
from tests.support.binaries import etcd_35, weed
from tests.support.etcd import EtcdCluster
from tests.support.seaweed import SeaweedServer
work = Path(sys.argv[1])
cluster = EtcdCluster(etcd_35(), work / "etcd").__enter__()
seaweed = SeaweedServer(weed(), work / "seaweed").start()
print(cluster.first().process.pid, seaweed.process.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_the_servers_of_a_test_run_killed_outright_die_with_it(tmp_path: Path, signum: int) -> None:
    # pytest killed by SIGKILL or SIGTERM runs no fixture's teardown: its etcd and SeaweedFS
    # must not go on holding ports and disk.
    run = subprocess.Popen([sys.executable, "-c", SERVERS_OF_A_KILLED_RUN, str(tmp_path)],
                           stdout=subprocess.PIPE, text=True)
    servers: list[int] = []
    try:
        assert run.stdout is not None
        servers = [int(pid) for pid in run.stdout.readline().split()]
        assert len(servers) == 2 and all(map(alive, servers)), "the servers did not start"
        run.send_signal(signum)
        run.wait(10)
        assert not still_alive(servers, 10), "a server outlived the killed test run"
    finally:
        run.kill()
        for pid in filter(alive, servers):
            os.kill(pid, signal.SIGKILL)

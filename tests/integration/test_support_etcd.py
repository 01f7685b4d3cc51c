"""The test controllers themselves work: a real etcd over mTLS starts, answers, and stops; a
server that loses the race for its port starts again on new ones."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.binaries import EtcdRelease, weed
from tests.support.etcd import EtcdCluster
from tests.support.pki import Pki
from tests.support.seaweed import SeaweedServer


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

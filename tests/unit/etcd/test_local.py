"""A local etcd member (the drill's throwaway one): loopback only, clean environment, early exits reported."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from lifeboat.errors import OperationFailed
from lifeboat.etcd.local import LocalEtcd


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def test_every_url_it_listens_on_is_loopback(tmp_path: Path) -> None:
    etcd = LocalEtcd(Path("/bin/etcd"), "d", tmp_path, tmp_path / "log", 40001, 40002)
    urls = [a.split("=", 1)[1] for a in etcd.argv() if "-urls=" in a or "initial-cluster=" in a]
    assert urls and all("://127.0.0.1:" in u for u in urls)
    assert not any("metrics" in a for a in etcd.argv())


def test_etcd_variables_from_the_environment_are_not_passed_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETCD_LISTEN_METRICS_URLS", "http://0.0.0.0:2381")
    fake = script(tmp_path / "etcd", f'env > {tmp_path}/env; exit 0')
    with LocalEtcd(fake, "d", tmp_path, tmp_path / "log", 1, 2) as etcd:
        assert etcd.process is not None
        etcd.process.wait(10)
    assert "ETCD_LISTEN_METRICS_URLS" not in (tmp_path / "env").read_text()


def test_etcd_exiting_early_is_reported_with_its_last_log_line(tmp_path: Path) -> None:
    fake = script(tmp_path / "etcd", 'echo "listen tcp 127.0.0.1:1: bind: address already in use" >&2; exit 1')
    with LocalEtcd(fake, "d", tmp_path, tmp_path / "log") as etcd:
        with pytest.raises(OperationFailed, match="exited before it was ready: .*address already in use"):
            etcd.wait_ready(10)


def test_a_hung_etcd_is_killed_on_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lifeboat.etcd.local.STOP_GRACE", 0.5)
    trapped = tmp_path / "trapped"
    fake = script(tmp_path / "etcd", f"trap '' TERM; touch {trapped}; while :; do sleep 1; done")
    etcd = LocalEtcd(fake, "d", tmp_path, tmp_path / "log", 1, 2)
    with etcd:
        process = etcd.process
        deadline = time.monotonic() + 30
        while not trapped.exists():  # SIGTERM must come after the shell ignores it
            assert time.monotonic() < deadline, "the fake etcd never started"
            time.sleep(0.01)
    assert process is not None and process.returncode == -9


def test_a_wait_for_an_etcd_not_yet_serving_asks_again_every_poll(tmp_path: Path) -> None:
    """grpc waits out a reconnect backoff (0.5 s growing to 5 s) after a failed connection, so a
    wait that reused one client asked about four times in 3 s and caught a restored etcd that
    served after 1 s only after 10 s; each poll (every 0.1 s) must try to connect again."""
    fake = script(tmp_path / "etcd", "exec sleep 60")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    attempts: list[float] = []
    done = threading.Event()

    def refuse_each() -> None:  # accept and hang up at once: a connection that fails
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            attempts.append(time.monotonic())
            connection.close()

    server = threading.Thread(target=refuse_each, daemon=True)
    server.start()
    try:
        with LocalEtcd(fake, "d", tmp_path, tmp_path / "log", listener.getsockname()[1], 2) as etcd:
            with pytest.raises(OperationFailed, match="not ready after 3s"):
                etcd.wait_ready(3)
    finally:
        done.set()
        server.join(5)
        listener.close()
    assert len(attempts) >= 10, attempts


def test_the_ports_it_chose_are_given_to_no_other_socket_while_it_lives_yet_etcd_can_listen_on_them_again(
    tmp_path: Path,
) -> None:
    # A drill chose free ports, restored the snapshot (minutes for a large one), then started
    # etcd: any program given one of the ports meanwhile made etcd fail with "address already in use".
    etcd = LocalEtcd(Path("/bin/etcd"), "d", tmp_path, tmp_path / "log")
    ports = {etcd.client_port, etcd.peer_port}
    assert len(ports) == 2
    for port in ports:
        with socket.socket() as other, pytest.raises(OSError, match="in use"):
            other.bind(("127.0.0.1", port))
    asked: list[socket.socket] = []
    try:
        for _ in range(500):  # what the kernel gives a bind to port 0, here or in another process
            asked.append(socket.socket())
            asked[-1].bind(("127.0.0.1", 0))
        assert not ports & {sock.getsockname()[1] for sock in asked}
    finally:
        for sock in asked:
            sock.close()
    for _ in range(2):  # etcd started, stopped, started again: Go listens with SO_REUSEADDR
        for port in ports:
            with socket.socket() as server:
                server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                server.bind(("127.0.0.1", port))
                server.listen()
    del etcd
    for port in ports:  # given back with the object
        with socket.socket() as other:
            other.bind(("127.0.0.1", port))

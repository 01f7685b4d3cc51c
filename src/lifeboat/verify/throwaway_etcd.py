"""A single-member etcd started on a restored data dir, on loopback only, for a drill.

It listens on two free 127.0.0.1 ports without TLS, logs to a file in the drill's temp dir,
inherits no ``ETCD_*`` variables (etcd reads every flag from one, and a stray
``ETCD_LISTEN_METRICS_URLS`` would bind elsewhere), and is always stopped: SIGTERM, then
SIGKILL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from lifeboat.errors import LifeboatError, OperationFailed
from lifeboat.etcd import ConnectionSettings, EtcdClient
from lifeboat.restore.tool import last_error_line

LOOPBACK = "127.0.0.1"
STOP_GRACE = 10.0


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that the OS says is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def peer_url(port: int) -> str:
    return f"http://{LOOPBACK}:{port}"


class ThrowawayEtcd:
    """``with ThrowawayEtcd(...) as etcd:`` starts etcd; leaving the block stops it."""

    def __init__(
        self, binary: Path, data_dir: Path, name: str, client_port: int, peer_port: int,
        log: Path,
    ) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.name = name
        self.client_url = f"http://{LOOPBACK}:{client_port}"
        self.peer_url = peer_url(peer_port)
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [
            str(self.binary),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.name}={self.peer_url}",
        ]

    def __enter__(self) -> ThrowawayEtcd:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        with self.log.open("wb") as log:
            try:
                self.process = subprocess.Popen(
                    self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise OperationFailed(f"cannot start {self.binary}: {exc.strerror}") from None
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop etcd (idempotent): SIGTERM, then SIGKILL after a grace period."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def client(self) -> EtcdClient:
        return EtcdClient(ConnectionSettings((self.client_url,), dial_timeout=2.0,
                                             command_timeout=10.0))

    def wait_ready(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        """Wait until etcd answers and has elected itself leader; OperationFailed if not."""
        deadline = clock() + timeout
        with self.client() as client:
            while True:
                if self.process is None or self.process.poll() is not None:
                    raise OperationFailed(
                        f"the drill's etcd exited before it was ready: {self.last_log_line()}"
                    )
                try:
                    if client.status(self.client_url).leader_id != 0:
                        return
                except LifeboatError:  # not listening or not ready yet
                    pass
                if clock() > deadline:
                    raise OperationFailed(
                        f"the drill's etcd was not ready after {timeout:.0f}s: "
                        f"{self.last_log_line()}"
                    )
                time.sleep(0.1)

    def last_log_line(self) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "no log"
        return last_error_line(text)

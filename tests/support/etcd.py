"""Real etcd processes for tests: start, wait until healthy, pause, kill, always clean up.

Each member listens on free loopback ports only. With a :class:`Pki`, client and peer
traffic use mTLS and the members require client certificates.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .binaries import EtcdRelease, dying_with_the_tests
from .pki import Pki
from .ports import PORT_ATTEMPTS, PortTaken, free_port, lost_port_race


@dataclass
class EtcdMember:
    release: EtcdRelease
    name: str
    workdir: Path
    pki: Pki | None = None
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    quota_bytes: int = 4 << 30

    @property
    def scheme(self) -> str:
        return "https" if self.pki else "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.peer_port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / f"{self.name}.etcd"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def args(self, initial_cluster: str, token: str, state: str) -> list[str]:
        args = [
            str(self.release.etcd),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-token={token}",
            f"--initial-cluster-state={state}",
            "--logger=zap",
            "--log-level=warn",
            "--heartbeat-interval=50",
            "--election-timeout=500",
            f"--quota-backend-bytes={self.quota_bytes}",
        ]
        if self.pki:
            p = self.pki
            args += [
                f"--cert-file={p.node.cert}", f"--key-file={p.node.key}",
                f"--trusted-ca-file={p.ca}", "--client-cert-auth",
                f"--peer-cert-file={p.node.cert}", f"--peer-key-file={p.node.key}",
                f"--peer-trusted-ca-file={p.ca}", "--peer-client-cert-auth",
            ]
        return args

    def start(self, initial_cluster: str, token: str, state: str = "new") -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            dying_with_the_tests(self.args(initial_cluster, token, state)),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def etcdctl(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        """Run the stock etcdctl of this member's release against this member only."""
        cmd = [str(self.release.etcdctl), f"--endpoints={self.client_url}", *self.tls_flags(), *args]
        env = dict(os.environ, ETCDCTL_API="3")
        done = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def tls_flags(self) -> list[str]:
        if not self.pki:
            return []
        p = self.pki
        return [f"--cacert={p.ca}", f"--cert={p.client.cert}", f"--key={p.client.key}"]

    def healthy(self) -> bool:
        try:
            self.etcdctl("endpoint", "health", "--command-timeout=2s", check=True, timeout=5)
            return True
        except (RuntimeError, subprocess.TimeoutExpired):
            return False

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"etcd {self.name} exited: {self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.1)
        raise TimeoutError(f"etcd {self.name} not healthy after {timeout}s: {self.log_tail()}")

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def exited(self, log_from: int) -> RuntimeError | None:
        """Why the process ended (PortTaken if a port was taken), or None while it runs."""
        if self.process is None or self.process.poll() is None:
            return None
        with self.log_path.open("rb") as log:
            log.seek(log_from)
            said = log.read().decode(errors="replace")
        kind = PortTaken if lost_port_race(said) else RuntimeError
        return kind(f"etcd {self.name} exited: {self.log_tail()}")

    def new_ports(self) -> None:
        self.client_port, self.peer_port = free_port(), free_port()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def pause(self) -> None:
        """SIGSTOP etcd; returns once every thread of it has stopped (a stop is delivered to each
        thread on its way back to user space: on a loaded machine a Status asked right after
        the signal could still be answered)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while not all(_stopped(task) for task in Path(f"/proc/{self.process.pid}/task").iterdir()):
            assert time.monotonic() < deadline, f"etcd {self.name} did not stop within 10 s of SIGSTOP"
            time.sleep(0.01)

    def resume(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGCONT)
            os.killpg(proc.pid, sig)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class EtcdCluster:
    """One to seven members started together; a context manager that always stops them."""

    def __init__(
        self, release: EtcdRelease, workdir: Path, size: int = 1,
        pki: Pki | None = None, token: str = "lifeboat-test", quota_bytes: int = 4 << 30,
    ) -> None:
        self.release = release
        self.token = token
        self.members = [EtcdMember(release, f"m{i}", workdir, pki, quota_bytes=quota_bytes)
                        for i in range(size)]

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def start(self, timeout: float = 30) -> EtcdCluster:
        """Start every member; a new cluster that lost a port race starts again on new ports."""
        fresh = not any(m.data_dir.exists() for m in self.members)
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                return self._start_once(timeout)
            except PortTaken:
                # Only a cluster with no data yet may change its peer URLs: an existing member
                # keeps the URLs it was created with in its membership.
                if not fresh or attempt == PORT_ATTEMPTS:
                    raise
                # Killed: their data dirs go next, and a member that never had a quorum can take
                # a SIGTERM's full 10 s to stop.
                for m in self.members:
                    m.kill()
                for m in self.members:
                    shutil.rmtree(m.data_dir, ignore_errors=True)
                    m.new_ports()
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> EtcdCluster:
        logs = [m.log_size() for m in self.members]
        for m in self.members:
            m.start(self.initial_cluster, self.token)
        deadline = time.monotonic() + timeout
        waiting = list(zip(self.members, logs))
        while waiting:
            still = []
            for m, log_from in waiting:
                # Before each health check (up to 2 s while there is no quorum), so that a member
                # that lost a port race is noticed at once.
                for other, other_log_from in waiting:
                    if (ended := other.exited(other_log_from)) is not None:
                        raise ended
                if not m.healthy():
                    still.append((m, log_from))
            waiting = still
            if waiting and time.monotonic() > deadline:
                names = ", ".join(m.name for m, _ in waiting)
                raise TimeoutError(f"etcd {names} not healthy after {timeout}s: {waiting[0][0].log_tail()}")
            if waiting:
                time.sleep(0.1)
        return self

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def __enter__(self) -> EtcdCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def first(self) -> EtcdMember:
        return self.members[0]


def put_many(member: EtcdMember, items: Sequence[tuple[str, str]]) -> None:
    """Write keys through the stock etcdctl, in one txn-free batch of puts."""
    for key, value in items:
        member.etcdctl("put", key, value)


def _stopped(task: Path) -> bool:
    """Whether the thread at /proc/PID/task/TID is stopped by a signal (state T), or gone."""
    try:
        return (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return True

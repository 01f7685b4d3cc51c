"""One etcd member run as a local process on loopback: the drill's throwaway etcd, the demo's members.

It listens on 127.0.0.1 only, logs to a file, inherits no ``ETCD_*`` variables (etcd reads
every flag from one, and a stray ``ETCD_LISTEN_METRICS_URLS`` would bind elsewhere), runs in
its own session, and is always stopped: SIGTERM, then SIGKILL after a grace period. If
lifeboat dies first (kill -9, the OOM killer), the kernel kills it too (Linux's parent-death
signal, :func:`~lifeboat.waits.killed_with_lifeboat`): a drill's etcd serves a copy of the
cluster's data, and left running it would hold that copy's disk after the drill's spool is
swept (:mod:`lifeboat.snapshot.spool`).
Plain HTTP unless :class:`MemberTls` is given, then clients and peers need certificates.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from lifeboat.clock import Clock, SystemClock
from lifeboat.errors import LifeboatError, OperationFailed
from lifeboat.etcd.binaries import last_error_line
from lifeboat.etcd.client import EtcdClient
from lifeboat.etcd.settings import ConnectionSettings, TlsConfig
from lifeboat.waits import killed_with_lifeboat

LOOPBACK = "127.0.0.1"
STOP_GRACE = 10.0
READY_POLL = 0.1


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that the OS says is free right now; anything may take it next:
    hold a :class:`ReservedPort` for a server that binds it later or binds it again."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


class ReservedPort:
    """A TCP port on 127.0.0.1 that no other socket is given while this object lives, yet etcd can listen on.

    Linux picks a port for a bind to port 0 or for an outgoing connection only among ports no
    socket is bound to. This object keeps a socket bound to its port, with SO_REUSEADDR and never
    listening: another SO_REUSEADDR socket may still bind the port and listen, and Go sets
    SO_REUSEADDR on every listener, etcd's included. So etcd can be stopped and started again on
    the port (its peer URL is written into its data dir) without a gap in which the port is free.
    """

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((LOOPBACK, 0))
        self.port: int = self._socket.getsockname()[1]

    def close(self) -> None:
        self._socket.close()

    def __del__(self) -> None:
        self._socket.close()


def peer_url(port: int) -> str:
    """The plain-HTTP peer URL of a local member listening on ``port``."""
    return f"http://{LOOPBACK}:{port}"


@dataclass(frozen=True)
class MemberTls:
    """The certificate a member serves to clients and peers, and the CA it requires theirs from."""

    cert: Path
    key: Path
    ca: Path


@dataclass
class LocalEtcd:
    """``with LocalEtcd(...) as etcd:`` starts etcd; leaving the block stops it.

    A port left 0 is chosen and reserved (:class:`ReservedPort`) for as long as this object
    lives: it stays this member's while etcd is restored into, stopped and started again.
    ``initial_cluster`` defaults to this member alone; ``token`` is passed only when given;
    ``flags`` are added as they are (the demo's faster elections, for instance).

    etcd is killed when the thread that started it ends (the parent-death signal follows the
    thread): start it in a thread that outlives it, as every ``with`` block does.
    """

    binary: Path
    name: str
    data_dir: Path
    log: Path
    client_port: int = 0
    peer_port: int = 0
    tls: MemberTls | None = None
    initial_cluster: str = ""
    token: str | None = None
    flags: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    reserved: list[ReservedPort] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.client_port:
            self.client_port = self._reserve_port()
        if not self.peer_port:
            self.peer_port = self._reserve_port()

    def _reserve_port(self) -> int:
        self.reserved.append(ReservedPort())
        return self.reserved[-1].port

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{LOOPBACK}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://{LOOPBACK}:{self.peer_port}"

    def argv(self) -> list[str]:
        argv = [
            str(self.binary),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster or f'{self.name}={self.peer_url}'}",
        ]
        if self.token is not None:
            argv.append(f"--initial-cluster-token={self.token}")
        if self.tls is not None:
            t = self.tls
            argv += [
                f"--cert-file={t.cert}", f"--key-file={t.key}", f"--trusted-ca-file={t.ca}",
                "--client-cert-auth", f"--peer-cert-file={t.cert}", f"--peer-key-file={t.key}",
                f"--peer-trusted-ca-file={t.ca}", "--peer-client-cert-auth",
            ]
        return argv + list(self.flags)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Start etcd in the background, appending its output to ``log``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            try:
                self.process = subprocess.Popen(
                    killed_with_lifeboat(self.argv()), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, env=env, start_new_session=True,
                )
            except OSError as exc:
                raise OperationFailed(f"cannot start {self.binary}: {exc.strerror}") from None

    def __enter__(self) -> LocalEtcd:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop etcd (idempotent) with ``sig``, then SIGKILL after a grace period."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def client(self, tls: TlsConfig | None = None) -> EtcdClient:
        """A client of this member alone (``tls``: the client certificate a TLS member requires)."""
        return EtcdClient(ConnectionSettings((self.client_url,), tls, dial_timeout=2.0,
                                             command_timeout=10.0))

    def wait_ready(self, timeout: float, clock: Clock | None = None, tls: TlsConfig | None = None,
                   check: Callable[[], None] = lambda: None) -> None:
        """Wait until etcd answers and has elected itself leader; OperationFailed if not.
        ``check`` is called before each poll (it raises to stop the wait).

        Each poll asks through a new client: a gRPC channel whose connection was refused (etcd
        not listening yet) tries again only after its reconnect backoff, 0.5 s growing to 5 s,
        and so kept a drill waiting 10 s for a restored etcd that served after one.
        """

        def ready() -> bool:
            check()
            if not self.running:
                raise OperationFailed(f"etcd {self.name} exited before it was ready: {self.last_log_line()}")
            with self.client(tls) as client:
                try:
                    return client.status(self.client_url).leader_id != 0
                except LifeboatError:  # not listening or not ready yet
                    return False

        if not (clock or SystemClock()).wait_until(ready, timeout, READY_POLL):
            raise OperationFailed(f"etcd {self.name} was not ready after {timeout:.0f}s: {self.last_log_line()}")

    def last_log_line(self) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "no log"
        return last_error_line(text)

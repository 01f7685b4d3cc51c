"""Loopback ports for the test servers: outside the kernel's ephemeral range, reserved across processes.

A port asked of the OS by binding port 0 is free only at that moment. Tests stop etcd and start
it again on the same port (restores, member replacement, the agent's restores); while it is
stopped, another process's bind to port 0 (another pytest session on this machine, a CI job)
may be given that port and start a server on it, and the restarted member cannot bind.

So the suite's ports come from a band the kernel never hands out on its own: outside the
ephemeral range of ``/proc/sys/net/ipv4/ip_local_port_range`` (below it, else above; this also
keeps them from every outgoing connection's source port); ``LIFEBOAT_TEST_PORTS=LOW-HIGH``
chooses another band. Each port is reserved with an exclusive ``flock`` on a file named after it in
``LOCK_DIR``, shared by every process on the machine; the lock is held by the pytest process,
not by the servers it starts, so a server stopped and started again keeps its port. Before a
port is handed out it is bound once the way the servers bind it (``SO_REUSEADDR``), in case a
program that knows nothing of the locks listens there. A process that dies releases its locks.

``tests/conftest.py`` gives a test's ports back when the test is over; ports reserved while a
module- or session-wide fixture is set up stay reserved until the session ends.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path


# What a server that lost the race for a port it was given says: etcd reports the OS's
# EADDRINUSE message; ``weed mini`` checks the ports it was given before binding and exits
# with "Port allocation failed" (for a port it chose itself it only warns and picks another).
PORT_TAKEN = ("address already in use", "Port allocation failed")
# How many times a server is started again on new ports after losing such a race (to a
# program that binds a port of the band without asking for its lock).
PORT_ATTEMPTS = 4

LOCK_DIR = Path(tempfile.gettempdir()) / "lifeboat-test-ports"
BAND_SIZE = 10_000
BAND_FLOOR = 10_000  # below it lie many well-known ports (etcd's own 2379/2380 among them)
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


class PortTaken(RuntimeError):
    """A server exited because another process bound one of its ports first."""


def port_band() -> range:
    """The ports the suite reserves from: ``LIFEBOAT_TEST_PORTS``, else beside the ephemeral range."""
    if chosen := os.environ.get("LIFEBOAT_TEST_PORTS"):
        first, _, last = chosen.partition("-")
        return range(int(first), int(last) + 1)
    low, high = (int(n) for n in EPHEMERAL_RANGE.read_text().split())
    for band in range(max(BAND_FLOOR, low - BAND_SIZE), low), range(high + 1, min(65_536, high + 1 + BAND_SIZE)):
        if len(band) >= 1_000:
            return band
    raise RuntimeError(f"the ephemeral port range {low}-{high} leaves too few ports for the tests: "
                       "set LIFEBOAT_TEST_PORTS=LOW-HIGH to a range of unused ports outside it")


class PortPool:
    """Ports of ``band`` reserved by this process; thread-safe."""

    def __init__(self, band: Sequence[int], lock_dir: Path = LOCK_DIR) -> None:
        self.band = band
        self.lock_dir = lock_dir
        self._locks: dict[int, int] = {}  # port -> the descriptor holding its lock
        self._mutex = threading.Lock()

    @property
    def held(self) -> frozenset[int]:
        with self._mutex:
            return frozenset(self._locks)

    def reserve(self) -> int:
        """A port of the band that no other process holds and nothing is bound to; held until released."""
        self._make_lock_dir()
        with self._mutex:
            start = random.randrange(len(self.band))  # concurrent sessions start apart
            for i in range(len(self.band)):
                port = self.band[(start + i) % len(self.band)]
                if port not in self._locks and self._lock(port):
                    return port
        raise RuntimeError(f"all {len(self.band)} ports from {min(self.band)} to {max(self.band)} are reserved or in use")

    def release(self, port: int) -> None:
        with self._mutex:
            fd = self._locks.pop(port, None)
        if fd is not None:
            os.close(fd)  # closing the only descriptor of the file releases its flock

    def _lock(self, port: int) -> bool:
        fd = os.open(self.lock_dir / str(port), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        if not bindable(port):
            os.close(fd)
            return False
        self._locks[port] = fd
        return True

    def _make_lock_dir(self) -> None:
        if not self.lock_dir.is_dir():
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            try:
                self.lock_dir.chmod(0o1777)  # like /tmp: every user's sessions share it
            except PermissionError:
                pass  # another user made it


def bindable(port: int) -> bool:
    """Whether a server (Go and our Python stand-ins set SO_REUSEADDR) could bind 127.0.0.1:``port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


PORTS = PortPool(port_band())


def free_port() -> int:
    """A loopback port reserved for this session's servers (see the module's docstring)."""
    return PORTS.reserve()


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def lost_port_race(log: str) -> bool:
    """Whether a server's log says another process had bound one of its ports."""
    return any(phrase in log for phrase in PORT_TAKEN)

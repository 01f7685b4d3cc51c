"""Free loopback ports, asked of the OS (never hard-coded)."""

from __future__ import annotations

import socket
import threading
import time
from collections import deque


# What a server that lost the race for a port it was given says: etcd reports the OS's
# EADDRINUSE message; ``weed mini`` checks the ports it was given before binding and exits
# with "Port allocation failed" (for a port it chose itself it only warns and picks another).
PORT_TAKEN = ("address already in use", "Port allocation failed")
# How many times a server is started again on new ports after losing such a race.
PORT_ATTEMPTS = 4


class PortTaken(RuntimeError):
    """A server exited because another process bound one of its ports first."""


# The ports handed out lately. The OS may give the same free port to two binds in a row
# (nothing holds it in between), so a cluster could get one port for two members.
_RECENT: deque[int] = deque(maxlen=2048)
_RECENT_LOCK = threading.Lock()


def free_port() -> int:
    """A port nothing listens on now and not handed out lately by this process; another
    process may still take it before our server binds."""
    with _RECENT_LOCK:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _RECENT:
                _RECENT.append(port)
                return port


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

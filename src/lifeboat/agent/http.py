"""The agent's HTTP endpoints: ``/metrics``, ``/healthz``, ``/readyz``.

``/metrics`` answers in Prometheus' text format, or OpenMetrics when the scraper asks for it.

``/healthz`` answers 200 while the last good cycle is younger than the threshold and 503
with its age otherwise, so a hung or failing loop shows even though the process is up.
``/readyz`` answers 200 once the agent has finished one good cycle.

The port may be reachable from the node's network (the DaemonSet uses hostNetwork), so a
client cannot hold the agent's threads and file descriptors, which its backups need: each
connection gets :data:`REQUEST_SECONDS` for its whole request and answer, and at most
:data:`MAX_CONNECTIONS` are served at once (and :data:`LOCAL_CONNECTIONS` more from this host,
so that the kubelet's probes get through a flood); one more is closed as soon as it is accepted.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lifeboat.agent.metrics import AgentMetrics
from lifeboat.clock import Clock
from lifeboat.config import parse_listen
from lifeboat.errors import UsageError

log = logging.getLogger("lifeboat.agent")

REQUEST_SECONDS = 5.0
MAX_CONNECTIONS = 16
LOCAL_CONNECTIONS = 4  # served besides MAX_CONNECTIONS, from a loopback address


def from_this_host(client_address: object) -> bool:
    """Whether a client connected from a loopback address (IPv4, IPv6 or IPv4-mapped)."""
    try:
        address = ipaddress.ip_address(str(client_address[0]))  # type: ignore[index]
    except (ValueError, TypeError, IndexError):
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


class AgentHttp:
    """A small HTTP server on its own thread; ``close()`` stops it."""

    def __init__(self, address: str, metrics: AgentMetrics, clock: Clock, health_threshold: float) -> None:
        host, port = parse_address(address)
        handler = _handler(metrics, clock, health_threshold)
        try:
            self._server = _Server((host, port), handler, clock)
        except OSError as exc:
            raise UsageError(f"cannot listen on {address}: {exc.strerror}; pick another listen address") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="agent-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://[{host!s}]:{port}" if ":" in str(host) else f"http://{host!s}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _Server(ThreadingHTTPServer):
    """Serves each connection in a thread of its own, within its deadline and the cap."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], clock: Clock) -> None:
        # socketserver binds with the class's family, AF_INET: an IPv6 address needs AF_INET6.
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._clock = clock
        self._lock = threading.Lock()
        self._deadlines: dict[socket.socket, float] = {}  # the connections served now
        self._local: set[socket.socket] = set()  # those of them from this host
        self._busy = False
        super().__init__(address, handler)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        local = from_this_host(client_address)
        with self._lock:
            # Local clients (the kubelet's probes, the node's scraper) have places of their own:
            # a flood from the network cannot fail the liveness probe and get the pod restarted.
            served = sum(1 for conn in self._deadlines if (conn in self._local) == local)
            cap = LOCAL_CONNECTIONS if local else MAX_CONNECTIONS
            full = served >= cap
            if not full:
                self._deadlines[request] = self._clock.monotonic() + REQUEST_SECONDS
                if local:
                    self._local.add(request)
            elif not self._busy:
                self._busy = True
                log.warning("HTTP port busy: %d connections %s open, closing new ones until they end",
                            cap, "from this host" if local else "from the network", extra={"event": "http_busy"})
        if full:
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:  # no thread started: socketserver logs it and closes the connection
            self._forget(request)
            raise

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(request, None)
            self._local.discard(request)
            if not self._deadlines:
                self._busy = False

    def handle_error(self, request: object, client_address: object) -> None:
        """One log line, not socketserver's traceback on stderr, for what a handler raised."""
        exc = sys.exc_info()[1]
        log.error("HTTP request failed unexpectedly: %s: %s", type(exc).__name__, exc,
                  extra={"event": "http_failed"})

    def service_actions(self) -> None:
        """Cut connections past their deadline (serve_forever calls this every half second)."""
        now = self._clock.monotonic()
        with self._lock:
            late = [conn for conn, deadline in self._deadlines.items() if deadline <= now]
        for conn in late:
            # Counted out before the cut: a client that sees its connection end may connect
            # again at once, before the cut connection's thread has ended and forgotten it.
            self._forget(conn)
            try:  # wakes the thread blocked reading or writing it; the thread then ends
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its thread


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) to a bind tuple; UsageError if malformed."""
    try:
        host, port = parse_listen(address)
    except ValueError:
        raise UsageError(f"listen address {address!r} is not HOST:PORT ([ADDRESS]:PORT for IPv6), "
                         "e.g. 127.0.0.1:9847") from None
    return host or "127.0.0.1", port


def _handler(metrics: AgentMetrics, clock: Clock, threshold: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def version_string(self) -> str:
            return "lifeboat"  # not "BaseHTTP/0.6 Python/3.x.y": the port may face the node's network

        def handle(self) -> None:
            try:
                super().handle()
            except OSError as exc:  # the client went away, or was cut off at its deadline
                log.debug("HTTP client %s: %s", self.client_address[0], exc,
                          extra={"event": "http_client_error"})

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, content_type = metrics.exposition(self.headers.get("Accept"))
                self._send(200, body, content_type)
            elif path == "/healthz":
                self._health()
            elif path == "/readyz":
                ready = metrics.last_good_cycle() is not None
                self._send(200 if ready else 503, "ready\n" if ready else "no good cycle yet\n")
            else:
                self._send(404, "not found: try /metrics, /healthz or /readyz\n")

        def _health(self) -> None:
            last = metrics.last_good_cycle()
            if last is None:
                self._send(503, "no good cycle yet\n")
                return
            age = clock.monotonic() - last
            ok = age < threshold
            self._send(200 if ok else 503,
                       f"{'ok' if ok else 'stale'}: last good cycle {age:.0f}s ago (threshold {threshold:.0f}s)\n")

        def _send(self, code: int, body: str | bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            data = body.encode() if isinstance(body, str) else body
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return  # scrapes every few seconds would drown the agent's own log

    return Handler

"""The agent's HTTP endpoints: ``/metrics``, ``/healthz``, ``/readyz``.

``/metrics`` answers in Prometheus' text format, or OpenMetrics when the scraper asks for it.

``/healthz`` answers 200 while the last good cycle is younger than the threshold and 503
with its age otherwise, so a hung or failing loop shows even though the process is up.
``/readyz`` answers 200 once the agent has finished one good cycle.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lifeboat.agent.metrics import AgentMetrics
from lifeboat.clock import Clock
from lifeboat.errors import UsageError


class AgentHttp:
    """A small HTTP server on its own thread; ``close()`` stops it."""

    def __init__(self, address: str, metrics: AgentMetrics, clock: Clock, health_threshold: float) -> None:
        host, port = parse_address(address)
        handler = _handler(metrics, clock, health_threshold)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise UsageError(f"cannot listen on {address}: {exc.strerror}; pick another listen address") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="agent-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) to a bind tuple; UsageError if malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"listen address {address!r} is not HOST:PORT, e.g. 127.0.0.1:9787")
    return host.strip("[]") or "127.0.0.1", int(port)


def _handler(metrics: AgentMetrics, clock: Clock, threshold: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
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

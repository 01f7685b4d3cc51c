from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lifeboat.clock import FakeClock
from lifeboat.agent import http
from lifeboat.agent.http import LOCAL_CONNECTIONS, MAX_CONNECTIONS, REQUEST_SECONDS, AgentHttp, parse_address
from lifeboat.agent.metrics import AgentMetrics
from lifeboat.errors import UsageError

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=timezone.utc)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_parse_and_report_rpo_as_time_since_the_last_good_backup() -> None:
    clock = FakeClock(T0)
    m = AgentMetrics("prod", 'node-"a"', "0.1.0", clock)
    m.leader(True)
    m.backup_succeeded(T0 - timedelta(minutes=10), 12.5, 4096, 777)
    m.failed("repository_unavailable")
    m.failed("repository_unavailable")
    m.drill(False, T0)
    s = samples(m.render())
    assert s[("lifeboat_agent_is_leader", ())] == 1
    assert s[("lifeboat_backup_age_seconds", ())] == 600
    assert s[("lifeboat_backup_last_success_timestamp_seconds", ())] == (T0 - timedelta(minutes=10)).timestamp()
    assert s[("lifeboat_backup_last_size_bytes", ())] == 4096
    assert s[("lifeboat_backup_last_revision", ())] == 777
    assert s[("lifeboat_backup_last_duration_seconds", ())] == 12.5
    assert s[("lifeboat_backup_failures_total", (("reason", "repository_unavailable"),))] == 2
    assert s[("lifeboat_drill_last_result", ())] == 0
    assert s[("lifeboat_drills_total", (("result", "fail"),))] == 1
    assert s[("lifeboat_agent_info", (("agent", 'node-"a"'), ("cluster", "prod"), ("version", "0.1.0")))] == 1
    clock.advance(60)
    assert samples(m.render())[("lifeboat_backup_age_seconds", ())] == 660


def test_an_older_backup_learned_later_does_not_move_the_last_success_back() -> None:
    m = AgentMetrics("prod", "a", "0", FakeClock(T0))
    m.backup_succeeded(T0, 1.0, 10, 5)
    m.backup_succeeded(T0 - timedelta(hours=1), 1.0, 20, 3, ours=False)
    assert samples(m.render())[("lifeboat_backup_last_revision", ())] == 5


def test_no_backup_yet_means_no_age_sample_rather_than_zero() -> None:
    s = samples(AgentMetrics("prod", "a", "0", FakeClock(T0)).render())
    assert ("lifeboat_backup_age_seconds", ()) not in s


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_healthz_reports_the_age_of_the_last_good_cycle() -> None:
    clock = FakeClock(T0)
    m = AgentMetrics("prod", "a", "0", clock)
    server = AgentHttp("127.0.0.1:0", m, clock, health_threshold=60)
    try:
        assert get(server.url + "/healthz")[0] == 503
        assert get(server.url + "/readyz")[0] == 503
        m.good_cycle()
        clock.advance(30)
        assert get(server.url + "/healthz") == (200, "ok: last good cycle 30s ago (threshold 60s)\n")
        assert get(server.url + "/readyz")[0] == 200
        clock.advance(45)
        code, body = get(server.url + "/healthz")
        assert (code, body) == (503, "stale: last good cycle 75s ago (threshold 60s)\n")
        code, body = get(server.url + "/metrics")
        assert code == 200 and "lifeboat_agent_cycles_total 1" in body
        assert get(server.url + "/nope")[0] == 404
    finally:
        server.close()


def test_a_scraper_asking_for_openmetrics_gets_it_and_others_get_the_text_format() -> None:
    clock = FakeClock(T0)
    m = AgentMetrics("prod", "a", "0", clock)
    m.backup_succeeded(T0, 1.0, 10, 5)
    server = AgentHttp("127.0.0.1:0", m, clock, health_threshold=60)
    try:
        asked = urllib.request.Request(server.url + "/metrics",
                                       headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        with urllib.request.urlopen(asked, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            body = r.read().decode()
        assert body.endswith("# EOF\n") and "# TYPE lifeboat_backups counter" in body
        assert "lifeboat_backup_age_seconds 0.0" in body
        with urllib.request.urlopen(server.url + "/metrics", timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    finally:
        server.close()


def test_listen_address_is_checked() -> None:
    assert parse_address("0.0.0.0:9847") == ("0.0.0.0", 9847)
    assert parse_address("[::1]:80") == ("::1", 80)
    assert parse_address("[::]:9847") == ("::", 9847)
    for bad in ("localhost", "1.2.3.4:http", "h:70000", "127.0.0.1:\u0663\u0663", "::1:80", "[::1:80", "[]:80"):
        with pytest.raises(UsageError, match="HOST:PORT"):
            parse_address(bad)


def test_a_taken_port_is_a_usage_error() -> None:
    m = AgentMetrics("prod", "a", "0", FakeClock(T0))
    first = AgentHttp("127.0.0.1:0", m, m.clock, 60)
    try:
        with pytest.raises(UsageError, match="cannot listen"):
            AgentHttp(first.url.removeprefix("http://"), m, m.clock, 60)
    finally:
        first.close()
    assert threading.active_count() >= 1


def test_a_client_whose_connections_were_cut_is_served_at_once_though_their_threads_end_later(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The cut connections' threads end a while after the client saw them closed (a loaded
    machine): a new connection must not be refused as over the cap for them meanwhile."""
    import socketserver
    ended = socketserver.ThreadingMixIn.process_request_thread

    def ending_late(self: object, request: socket.socket, address: object) -> None:
        ended(self, request, address)  # type: ignore[arg-type]
        time.sleep(1.5)

    monkeypatch.setattr(socketserver.ThreadingMixIn, "process_request_thread", ending_late)
    clock = FakeClock(T0)
    m = AgentMetrics("prod", "a", "0", clock)
    m.good_cycle()
    monkeypatch.setattr(http, "from_this_host", lambda address: False)  # all from the network
    server = AgentHttp("127.0.0.1:0", m, clock, health_threshold=60)
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    try:
        slow = [socket.create_connection((host, int(port)), timeout=5) for _ in range(MAX_CONNECTIONS)]
        for conn in slow:
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never ends
        time.sleep(0.2)  # every one of them accepted and counted
        clock.advance(REQUEST_SECONDS)
        assert all(_closed_by_server(conn) for conn in slow)
        assert get(server.url + "/healthz")[0] == 200
    finally:
        for conn in slow:
            conn.close()
        server.close()


def _closed_by_server(conn: socket.socket) -> bool:
    """Whether the server closes ``conn`` within a few seconds (without having answered)."""
    conn.settimeout(3)
    try:
        return conn.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_slow_clients_are_cut_at_their_deadline_and_those_over_the_cap_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(T0)
    m = AgentMetrics("prod", "a", "0", clock)
    m.good_cycle()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    # Every client but the probe counts as one from the network (they all come from loopback here).
    monkeypatch.setattr(http, "from_this_host", lambda address: address[1] == probe.getsockname()[1])
    server = AgentHttp("127.0.0.1:0", m, clock, health_threshold=60)
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    slow = []
    try:
        for _ in range(MAX_CONNECTIONS):  # a slowloris: requests that never end
            conn = socket.create_connection((host, int(port)), timeout=5)
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            slow.append(conn)
        one_more = socket.create_connection((host, int(port)), timeout=5)
        slow.append(one_more)
        one_more.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert _closed_by_server(one_more)
        # The kubelet's liveness probe, from this host, is served all the same.
        probe.settimeout(5)
        probe.connect((host, int(port)))
        probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert probe.recv(64).startswith(b"HTTP/1.0 200")
        clock.advance(REQUEST_SECONDS)
        assert all(_closed_by_server(conn) for conn in slow[:-1])
        assert get(server.url + "/healthz")[0] == 200
    finally:
        probe.close()
        for conn in slow:
            conn.close()
        server.close()


def test_answers_name_no_python_version() -> None:
    """Every answer, errors included, carried `Server: BaseHTTP/0.6 Python/3.11.7` on a port that
    may face the node's network."""
    clock = FakeClock(T0)
    server = AgentHttp("127.0.0.1:0", AgentMetrics("prod", "a", "0", clock), clock, health_threshold=60)
    try:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        for request in (b"GET /metrics HTTP/1.0\r\n\r\n", b"BREW /pot HTTP/1.0\r\n\r\n"):
            with socket.create_connection((host, int(port)), timeout=5) as conn:
                conn.sendall(request)
                answer = b""
                while chunk := conn.recv(65536):
                    answer += chunk
            headers = answer.split(b"\r\n\r\n", 1)[0].decode()
            assert "Server: lifeboat\r\n" in headers and "Python" not in headers
    finally:
        server.close()


def test_a_flood_from_this_host_is_logged_with_this_hosts_cap(caplog: pytest.LogCaptureFixture) -> None:
    """Loopback clients filling their own places were logged as '16 connections open' (the
    network's cap) while 4 were."""
    clock = FakeClock(T0)
    server = AgentHttp("127.0.0.1:0", AgentMetrics("prod", "a", "0", clock), clock, health_threshold=60)
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    slow = []
    try:
        for _ in range(LOCAL_CONNECTIONS + 1):
            conn = socket.create_connection((host, int(port)), timeout=5)
            conn.sendall(b"GET /metrics HTTP/1.1\r\n")
            slow.append(conn)
        assert _closed_by_server(slow[-1])
        busy = [r.getMessage() for r in caplog.records if getattr(r, "event", None) == "http_busy"]
        assert busy == [f"HTTP port busy: {LOCAL_CONNECTIONS} connections from this host open, "
                        "closing new ones until they end"]
    finally:
        for conn in slow:
            conn.close()
        server.close()


@pytest.mark.parametrize("from_", [("127.0.0.1", 1), ("::1", 1, 0, 0), ("::ffff:127.0.0.1", 1, 0, 0)])
def test_loopback_clients_are_from_this_host(from_: tuple[object, ...]) -> None:
    assert http.from_this_host(from_)
    assert not http.from_this_host(("10.0.0.1", 1)) and not http.from_this_host(("2001:db8::1", 1, 0, 0))


@pytest.mark.parametrize("accept", ["application/openmetrics-text; version=x", "text/plain; version=1.x"])
def test_a_scrape_asking_for_a_version_prometheus_client_cannot_read_gets_the_text_format(
        accept: str, capfd: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock(T0)
    server = AgentHttp("127.0.0.1:0", AgentMetrics("prod", "a", "0", clock), clock, health_threshold=60)
    try:
        asked = urllib.request.Request(server.url + "/metrics", headers={"Accept": accept})
        with urllib.request.urlopen(asked, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert "lifeboat_agent_cycles_total 0" in r.read().decode()
    finally:
        server.close()
    assert "Traceback" not in capfd.readouterr().err


def test_a_client_gone_before_its_answer_is_one_log_line_not_a_traceback(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="lifeboat.agent")
    clock = FakeClock(T0)
    server = AgentHttp("127.0.0.1:0", AgentMetrics("prod", "a", "0", clock), clock, health_threshold=60)
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            conn.settimeout(1)
            for _ in range(5):  # until the server has accepted it and then cut it off at its deadline
                clock.advance(REQUEST_SECONDS)
                with contextlib.suppress(TimeoutError):
                    assert conn.recv(1024) == b""  # it did not answer: its answer met a closed socket
                    break
            else:
                pytest.fail("the server did not close a connection past its deadline")
    finally:
        server.close()

    def logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "event", None) == "http_client_error"]

    # The connection's thread (a daemon, not joined by close) logs once the socket it writes to
    # is gone: on a loaded machine, after the client saw the connection closed.
    deadline = time.monotonic() + 10
    while not logged() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "Traceback" not in capfd.readouterr().err
    lines = logged()
    assert len(lines) == 1 and lines[0].exc_info is None and "\n" not in lines[0].getMessage()


def test_an_ipv6_listen_address_is_served() -> None:
    clock = FakeClock(T0)
    m = AgentMetrics("prod", "a", "0", clock)
    m.good_cycle()
    server = AgentHttp("[::1]:0", m, clock, health_threshold=60)
    try:
        assert server.url.startswith("http://[::1]:")
        assert get(server.url + "/healthz")[0] == 200
    finally:
        server.close()

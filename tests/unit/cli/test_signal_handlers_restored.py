"""Commands that turn SIGTERM and SIGINT into a stop flag give the process its handlers back
when they return: run in-process (tests, an embedding program), the process still stops on them."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from lifeboat.cli.main import main
from lifeboat.waits import stop_on_signals


def handlers() -> tuple[object, object]:
    return signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)


def test_inside_the_block_the_signals_set_the_flag_and_after_it_they_do_what_they_did() -> None:
    before = handlers()
    stop = threading.Event()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: the handler only sets the flag
        assert stop.wait(5)
    assert handlers() == before
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        threading.Event().wait(5)


def test_the_agent_run_in_process_gives_back_the_handlers_it_replaced(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"repository: {{url: {tmp_path / 'repo'}}}\netcd: {{endpoints: [127.0.0.1:1]}}\n"
                      "schedules: {backup: '@hourly'}\nagent: {listen: '127.0.0.1:0'}\n")
    seen: list[tuple[object, object]] = []

    def run_agent(*args: object) -> int:
        seen.append(handlers())
        return 0

    monkeypatch.setattr("lifeboat.cli.agent.run_agent", run_agent)
    monkeypatch.setattr("lifeboat.cli.agent.configure_logging", lambda *args: None)
    before = handlers()
    assert main(["agent", "--config", str(config)]) == 0
    assert seen and seen[0] != before  # while it ran, SIGTERM and SIGINT only asked it to stop
    assert handlers() == before


def test_sighup_stops_the_agent_as_sigterm_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "lifeboat.yaml"
    config.write_text(f"repository: {{url: {tmp_path / 'repo'}}}\netcd: {{endpoints: [127.0.0.1:1]}}\n"
                      "schedules: {backup: '@hourly'}\nagent: {listen: '127.0.0.1:0'}\n")
    stopped: list[bool] = []

    def run_agent(config: object, environ: object, stop: threading.Event) -> int:
        os.kill(os.getpid(), signal.SIGHUP)
        stopped.append(stop.wait(5))
        return 0

    monkeypatch.setattr("lifeboat.cli.agent.run_agent", run_agent)
    monkeypatch.setattr("lifeboat.cli.agent.configure_logging", lambda *args: None)
    # Not its default action, which would end this test run: a handler that only notes it.
    hangups: list[int] = []

    def note(signum: int, frame: object) -> None:
        hangups.append(signum)

    previous = signal.signal(signal.SIGHUP, note)
    try:
        assert main(["agent", "--config", str(config)]) == 0
        assert signal.getsignal(signal.SIGHUP) is note  # given back after the agent returned
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert stopped == [True] and hangups == []

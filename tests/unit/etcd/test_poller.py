"""Which gRPC poller reads etcd's streams: the classic one, for the grpcio releases measured with it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import lifeboat.etcd as etcd_package
from lifeboat.etcd import CLASSIC_POLLER, CLASSIC_POLLER_RELEASES

# Opens a channel (grpc reads GRPC_EXPERIMENTS when it starts) and prints what lifeboat set.
_PROBE = """
import os, socket
import lifeboat.etcd
import grpc
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
channel = grpc.insecure_channel("127.0.0.1:%d" % server.getsockname()[1])
try:
    grpc.channel_ready_future(channel).result(timeout=1)
except grpc.FutureTimeoutError:
    pass
channel.close()
print(os.environ.get("GRPC_EXPERIMENTS"))
"""


def _probe(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    return subprocess.run([sys.executable, "-c", _PROBE], env={**clean, **env}, capture_output=True,
                          text=True, check=True, timeout=60)


def test_the_installed_grpcio_is_a_release_measured_with_the_classic_poller() -> None:
    # A new grpcio may no longer have the experiment (grpc then prints an error on every run):
    # measure a backup's CPU with and without it (benchmarks/bench_backup.py) before adding it.
    # pyproject.toml admits no other release (next test), so a fresh install passes this.
    from importlib.metadata import version

    assert version("grpcio").startswith(CLASSIC_POLLER_RELEASES)


def test_pyproject_admits_only_grpcio_releases_measured_with_the_classic_poller() -> None:
    project = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(text) for text in project["dependencies"] + project["optional-dependencies"]["test"]]
    grpc = [r for r in wanted if r.name in ("grpcio", "grpcio-tools")]
    assert [r.name for r in grpc] == ["grpcio", "grpcio-tools"]
    newest = max(tuple(int(n) for n in release.rstrip(".").split(".")) for release in CLASSIC_POLLER_RELEASES)
    unmeasured = f"{newest[0]}.{newest[1] + 1}.0"
    for requirement in grpc:
        assert not requirement.specifier.contains(unmeasured), requirement


def test_etcd_streams_use_the_classic_poller_and_grpc_knows_it() -> None:
    probe = _probe()
    assert probe.stdout.strip() == CLASSIC_POLLER
    assert probe.stderr == ""  # no "Unknown experiment" from grpc


def test_experiments_the_user_chose_are_kept() -> None:
    assert _probe(GRPC_EXPERIMENTS="tcp_rcv_lowat").stdout.strip() == "tcp_rcv_lowat"


def test_an_unmeasured_grpcio_keeps_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRPC_EXPERIMENTS", raising=False)
    monkeypatch.setattr(etcd_package, "version", lambda name: "9.99.0")
    etcd_package._prefer_classic_poller()
    assert "GRPC_EXPERIMENTS" not in os.environ

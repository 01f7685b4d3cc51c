"""The test suite's own port picking: ports outside the ephemeral range, never given to two holders."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ports import EPHEMERAL_RANGE, PortPool, PortTaken, free_port, port_band
from tests.support.seaweed import SeaweedServer

ROOT = Path(__file__).resolve().parents[2]

# Reserves argv[3] of the ports argv[1] (comma-separated) with locks in argv[2], prints them,
# and holds them until its stdin is closed.
_RESERVER = """
import sys
from pathlib import Path
from tests.support.ports import PortPool
pool = PortPool([int(port) for port in sys.argv[1].split(",")], Path(sys.argv[2]))
print(" ".join(str(pool.reserve()) for _ in range(int(sys.argv[3]))), flush=True)
sys.stdin.read()
"""


def reserver(band: list[int], lock_dir: Path, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _RESERVER, ",".join(map(str, band)), str(lock_dir), str(count)],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def reserved_by(process: subprocess.Popen[str]) -> set[int]:
    assert process.stdout is not None
    return {int(port) for port in process.stdout.readline().split()}


def ports_for_a_pool(count: int) -> list[int]:
    """Ports this session holds and nothing is bound to: a private pool (locks of its own) may use them."""
    return [free_port() for _ in range(count)]


def test_ports_handed_out_in_a_row_are_all_different() -> None:
    # Two members of a three-member cluster once got the same peer port ("has duplicate
    # url"): the OS may return the same free port to consecutive binds.
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)


LOSES_EVERY_PORT_RACE = """#!/bin/sh
mkdir -p data/attempt-$$
echo "listen tcp 127.0.0.1:1: bind: address already in use"
exec sleep 30
"""


def test_a_seaweed_start_that_loses_a_port_race_keeps_what_earlier_runs_stored(tmp_path: Path) -> None:
    """A benchmark's work dir holds its cached repository in data/ (bench_pitr: a 1.2 GB base and
    a million events); starting again on new ports once removed all of data/ with it."""
    weed = tmp_path / "weed"
    weed.write_text(LOSES_EVERY_PORT_RACE)
    weed.chmod(0o755)
    stored = tmp_path / "work" / "data" / "lifeboat-test_1.dat"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"a stored object")
    server = SeaweedServer(weed, tmp_path / "work")
    with pytest.raises(PortTaken):
        with server:
            pass
    assert stored.read_bytes() == b"a stored object"
    left = sorted(p.name for p in stored.parent.iterdir() if p.name.startswith("attempt-"))
    assert len(left) == 1, "each failed start's own files go but the last one's"


def test_a_fresh_seaweed_dir_loses_what_a_failed_start_made_in_it(tmp_path: Path) -> None:
    weed = tmp_path / "weed"
    weed.write_text(LOSES_EVERY_PORT_RACE)
    weed.chmod(0o755)
    with pytest.raises(PortTaken):
        with SeaweedServer(weed, tmp_path / "work"):
            pass
    assert len(list((tmp_path / "work" / "data").iterdir())) == 1
def test_the_band_lies_outside_the_kernels_ephemeral_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIFEBOAT_TEST_PORTS", raising=False)
    low, high = (int(n) for n in EPHEMERAL_RANGE.read_text().split())
    band = port_band()
    assert len(band) >= 1000 and (band.stop <= low or band.start > high)
    assert not low <= free_port() <= high


def test_two_processes_never_get_the_same_port(tmp_path: Path) -> None:
    band = ports_for_a_pool(50)
    ours = PortPool(band, tmp_path)
    mine = {ours.reserve() for _ in range(10)}
    first, second = reserver(band, tmp_path, 20), reserver(band, tmp_path, 20)
    try:
        theirs = [reserved_by(first), reserved_by(second)]
    finally:
        for process in (first, second):
            process.communicate("", timeout=30)
    assert [len(ports) for ports in theirs] == [20, 20]
    assert not (theirs[0] & theirs[1]) and not (mine & (theirs[0] | theirs[1]))


def test_a_process_that_ends_gives_its_ports_back(tmp_path: Path) -> None:
    band = ports_for_a_pool(3)
    process = reserver(band, tmp_path, len(band))
    assert reserved_by(process) == set(band)
    with pytest.raises(RuntimeError, match="reserved or in use"):
        PortPool(band, tmp_path).reserve()
    process.communicate("", timeout=30)
    pool = PortPool(band, tmp_path)
    assert {pool.reserve() for _ in band} == set(band)


def test_a_port_something_listens_on_is_skipped(tmp_path: Path) -> None:
    free, listened = ports_for_a_pool(2)
    with socket.socket() as listener:  # a program that knows nothing of the locks
        # As servers do: an earlier test's connections to this port may still be in TIME_WAIT.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", listened))
        listener.listen()
        pool = PortPool([listened, free], tmp_path)
        assert pool.reserve() == free
        with pytest.raises(RuntimeError, match="reserved or in use"):
            pool.reserve()
    assert pool.reserve() == listened


def test_a_released_port_can_be_reserved_again(tmp_path: Path) -> None:
    band = ports_for_a_pool(1)
    pool, other = PortPool(band, tmp_path), PortPool(band, tmp_path)
    assert pool.reserve() == band[0]
    with pytest.raises(RuntimeError):
        other.reserve()  # another holder, even in this process
    pool.release(band[0])
    assert other.reserve() == band[0]

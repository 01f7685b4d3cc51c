"""The test suite's own port picking: members of one cluster never share a port."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ports import PortTaken, free_port
from tests.support.seaweed import SeaweedServer


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

"""The test suite's own port picking: members of one cluster never share a port."""

from __future__ import annotations

from tests.support.ports import free_port


def test_ports_handed_out_in_a_row_are_all_different() -> None:
    # Two members of a three-member cluster once got the same peer port ("has duplicate
    # url"): the OS may return the same free port to consecutive binds.
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)

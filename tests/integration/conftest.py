"""Fixtures shared by the integration modules that need one plain etcd member.

``etcd`` is one member of the release under test (``release`` parametrises over etcd 3.5
and 3.4), on free loopback ports, without TLS; ``client`` talks to it. A module that needs
one release narrows ``release`` (``pytest.mark.parametrize("release", ["3.5"], indirect=True)``);
modules that need another shape (TLS, several members) define their own fixture of that name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeboat.etcd import ConnectionSettings, EtcdClient
from tests.support.binaries import EtcdRelease
from tests.support.etcd import EtcdCluster, EtcdMember


@pytest.fixture
def etcd(release: EtcdRelease, tmp_path: Path) -> Iterator[EtcdMember]:
    with EtcdCluster(release, tmp_path / "etcd") as cluster:
        yield cluster.first()


@pytest.fixture
def client(etcd: EtcdMember) -> Iterator[EtcdClient]:
    with EtcdClient(ConnectionSettings((etcd.client_url,))) as c:
        yield c

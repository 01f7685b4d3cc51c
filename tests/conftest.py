"""Session-wide fixtures: the real etcd releases, a throwaway PKI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.binaries import EtcdRelease, etcd_34, etcd_35
from tests.support.pki import Pki, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A second, unrelated CA: its certificates must be rejected by servers using ``pki``."""
    return make_pki(tmp_path_factory.mktemp("other-pki"), ca_name="some-other-ca")


@pytest.fixture(scope="session")
def release35() -> EtcdRelease:
    return etcd_35()


@pytest.fixture(scope="session")
def release34() -> EtcdRelease:
    return etcd_34()


@pytest.fixture(scope="session", params=["3.5", "3.4"])
def release(request: pytest.FixtureRequest) -> EtcdRelease:
    """Parametrises a test over both etcd releases the project supports in tests."""
    return etcd_35() if request.param == "3.5" else etcd_34()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path

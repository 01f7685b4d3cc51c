"""Session-wide fixtures: the real etcd releases, a throwaway PKI, a SeaweedFS S3 server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.binaries import EtcdRelease, etcd_34, etcd_35, weed
from tests.support.bolt_oracle import BoltOracle
from tests.support.cli import Cli
from tests.support.pki import Pki, make_pki
from tests.support.ports import PORTS
from tests.support.seaweed import S3Endpoint, SeaweedServer


# Ports reserved while a module- or session-wide fixture was set up: its servers may outlive
# the test that set it up, so these stay reserved until the session ends.
_FIXTURE_PORTS: set[int] = set()


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[object]) -> Iterator[None]:
    before = PORTS.held
    yield
    if fixturedef.scope != "function":
        _FIXTURE_PORTS.update(PORTS.held - before)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """A test's ports (its servers' included) are given back once it is torn down."""
    before = PORTS.held
    yield
    for port in PORTS.held - before - _FIXTURE_PORTS:
        PORTS.release(port)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A second, unrelated CA: its certificates must be rejected by servers using ``pki``."""
    return make_pki(tmp_path_factory.mktemp("other-pki"), ca_name="some-other-ca")


@pytest.fixture(scope="session")
def rsa_recipients(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three 4096-bit SSH RSA public keys (age recipients whose stanzas are about 700 bytes)."""
    import subprocess

    folder = tmp_path_factory.mktemp("rsa")
    for n in range(3):
        subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "4096", "-N", "", "-f", str(folder / f"rsa{n}")],
                       check=True)
    return [(folder / f"rsa{n}.pub").read_text().strip() for n in range(3)]


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


@pytest.fixture(scope="session")
def bolt_oracle(tmp_path_factory: pytest.TempPathFactory) -> BoltOracle:
    """Go's bbolt ``Tx.Check`` and dump, built once per session (see ``bolt_oracle.py``)."""
    return BoltOracle.build(tmp_path_factory.mktemp("bolt-oracle"))


@pytest.fixture(autouse=True)
def private_manifest_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's commands keep their manifest cache in a fresh directory, never the user's."""
    monkeypatch.delenv("LIFEBOAT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """One real SeaweedFS S3 server for the whole session, with an empty bucket."""
    with SeaweedServer(weed(), tmp_path_factory.mktemp("seaweed")) as server:
        yield server.s3()


@pytest.fixture
def s3_repo(seaweed: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> str:
    """An ``s3://`` URL with a fresh prefix; the AWS_* variables point at ``seaweed``."""
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    return f"s3://{seaweed.bucket}/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """The real ``lifeboat`` entry point, run in-process (see ``tests/support/cli.py``)."""
    return Cli(capsys)

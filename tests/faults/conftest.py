"""Fault injection against real servers: one etcd 3.5.1 member with data, shared by the module.

The cases here kill, interrupt, corrupt and race lifeboat the way an unlucky operator or a
hostile environment does (kill -9, SIGTERM from systemd or Kubernetes, flipped bytes in a
repository, two runs at once) and check that nothing is lost, leaked or misreported.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage
import pytest

from lifeboat.cli.main import main
from lifeboat.etcd import ConnectionSettings, EtcdClient
from tests.support.binaries import EtcdRelease
from tests.support.etcd import EtcdCluster, EtcdMember
from tests.support.etcd_load import load_keys, numbered


@pytest.fixture(scope="session")
def busy_etcd(release35: EtcdRelease, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdMember]:
    """A running member holding about 49 MB (random values: zstd cannot shrink them), so that a backup takes long enough to interrupt."""
    with EtcdCluster(release35, tmp_path_factory.mktemp("fault-etcd")) as cluster:
        member = cluster.first()
        with EtcdClient(ConnectionSettings((member.client_url,))) as client:
            load_keys(client, numbered("/registry/configmaps/faults/cm-", 8000, 4096))
        yield member


@dataclass(frozen=True)
class AgeKey:
    identity_file: Path
    recipient: str


@pytest.fixture(scope="session")
def age_key(tmp_path_factory: pytest.TempPathFactory) -> AgeKey:
    identity = pyrage.x25519.Identity.generate()
    path = tmp_path_factory.mktemp("age") / "key.txt"
    path.write_text(f"{identity}\n")
    path.chmod(0o600)
    return AgeKey(path, str(identity.to_public()))


@dataclass(frozen=True)
class BusyBackup:
    """A test's own copy of a repository holding one backup of ``busy_etcd``."""

    repo: Path
    id: str
    manifest: dict[str, Any]  # as ``backup -o json`` printed it

    @property
    def stored_snapshot(self) -> Path:
        """The stored snapshot object (``snapshot.db.zst``, or ``.age`` when encrypted)."""
        name = next(o["name"] for o in self.manifest["objects"] if o["name"].startswith("snapshot.db"))
        return self.repo / "clusters/default/backups" / self.id / name


@pytest.fixture(scope="session")
def busy_backup(busy_etcd: EtcdMember, age_key: AgeKey,
                tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path, bool], BusyBackup]:
    """``busy_backup(dest, encrypted)``: a copy, at ``dest``, of a repository holding one backup of
    ``busy_etcd`` (encrypted to ``age_key``, or not). Each kind is backed up once per session:
    busy_etcd never changes, and a backup of its 49 MB takes seconds."""
    made: dict[bool, tuple[Path, dict[str, Any]]] = {}

    def copy_of(dest: Path, encrypted: bool) -> BusyBackup:
        if encrypted not in made:
            repo = tmp_path_factory.mktemp("busy-backup") / "repo"
            encrypt = ["--encrypt-to", age_key.recipient] if encrypted else []
            out = io.StringIO()
            with pytest.MonkeyPatch.context() as env, contextlib.redirect_stdout(out):
                env.delenv("LIFEBOAT_CACHE_DIR", raising=False)  # never the user's cache
                env.setenv("XDG_CACHE_HOME", str(repo.parent / "xdg-cache"))
                code = main(["backup", f"--endpoints={busy_etcd.client_url}", "--repo", str(repo), "--no-files",
                             *encrypt, "-o", "json"])
            assert code == 0
            made[encrypted] = repo, json.loads(out.getvalue())
        repo, manifest = made[encrypted]
        shutil.copytree(repo, dest)
        return BusyBackup(dest, str(manifest["id"]), copy.deepcopy(manifest))

    return copy_of


def lifeboat_process(args: Sequence[str], env: dict[str, str] | None = None,
                     **popen: object) -> subprocess.Popen[bytes]:
    """``lifeboat ARGS`` as its own process (signals need a real one), in its own session."""
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "lifeboat.cli.main", *args],
        env={**os.environ, **(env or {})}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, **popen,
    )


def flip_byte(path: Path, at: float = 0.5) -> None:
    """Flip one bit of the byte at fraction ``at`` of ``path`` (in place)."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x10
    path.write_bytes(bytes(data))

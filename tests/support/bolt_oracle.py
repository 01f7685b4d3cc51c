"""Go's own bbolt (v1.3.6 from Debian) as a second, independent judge of every db we write.

``bolt_oracle.go`` beside this file is built once per test session into a temporary
directory, in GOPATH mode against Debian's ``golang-github-coreos-bbolt-dev`` sources; no
binary is committed. A missing Go toolchain skips on a developer's machine and fails in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.binaries import require

GO = Path("/usr/lib/go-1.19/bin/go")
GOPATH_SOURCES = Path("/usr/share/gocode")
SOURCE = Path(__file__).with_name("bolt_oracle.go")

# A bucket as the oracle dumps it: rows (hex key, hex value) and nested buckets by hex name.
Dump = dict[str, Any]


@dataclass(frozen=True)
class BoltOracle:
    binary: Path

    @classmethod
    def build(cls, workdir: Path) -> BoltOracle:
        go = require(GO, "Go 1.19 (Debian golang-1.19-go)")
        if not (GOPATH_SOURCES / "src/go.etcd.io/bbolt").is_dir():
            require(None, "Go bbolt sources (Debian golang-github-coreos-bbolt-dev)")
        binary = workdir / "bolt_oracle"
        env = dict(
            os.environ,
            GO111MODULE="off",
            GOPATH=f"{workdir / 'gopath'}:{GOPATH_SOURCES}",
            GOCACHE=str(workdir / "gocache"),
            GOFLAGS="",
        )
        subprocess.run(
            [str(go), "build", "-o", str(binary), str(SOURCE)],
            check=True, env=env, capture_output=True, timeout=600,
        )
        return cls(binary)

    def check(self, path: Path) -> list[str]:
        """Problems ``Tx.Check`` reports (an open failure counts as one); [] when sound."""
        done = subprocess.run(
            [str(self.binary), "check", str(path)], capture_output=True, text=True, timeout=600
        )
        lines = done.stdout.splitlines()
        return lines if done.returncode else []

    def dump(self, path: Path) -> dict[str, Dump]:
        """Every top-level bucket with its rows and nested buckets, as Go's bbolt reads them."""
        done = subprocess.run(
            [str(self.binary), "dump", str(path)], capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout + done.stderr
        result: dict[str, Dump] = json.loads(done.stdout)
        return result

    def create(self, path: Path, txs: list[list[list[Any]]], *, page_size: int = 4096,
               no_freelist_sync: bool = False) -> Path:
        """A db made by Go's bbolt itself: each transaction a list of operations
        (``["bucket", path]``, ``["put", path, key, value]``, ``["del", path, key]``;
        path elements, keys and values as bytes)."""
        spec = {
            "page_size": page_size,
            "no_freelist_sync": no_freelist_sync,
            "txs": [[_hexed(op) for op in tx] for tx in txs],
        }
        done = subprocess.run(
            [str(self.binary), "build", str(path)],
            input=json.dumps(spec), capture_output=True, text=True, timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return path


def _hexed(op: list[Any]) -> list[Any]:
    return [op[0], [p.hex() for p in op[1]], *(part.hex() for part in op[2:])]

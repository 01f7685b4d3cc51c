"""Real etcd snapshots of several shapes, and the stock tools' view of them (the oracles)."""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.binaries import EtcdRelease, etcd_34, etcd_35
from tests.support.etcd import EtcdCluster, EtcdMember
from tests.support.etcd_gateway import Gateway

RESOURCES = ("pods", "configmaps", "secrets", "services/specs", "deployments", "events")


@dataclass(frozen=True)
class ExpectedKey:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class Shot:
    """A saved snapshot and what etcd itself said about the data just before it."""

    path: Path
    keys: list[ExpectedKey]
    compacted_at: int | None
    member_name: str
    peer_url: str


@dataclass(frozen=True)
class Corpus:
    release: EtcdRelease
    empty: Shot
    busy: Shot


def etcdctl_get_all(member: EtcdMember) -> list[ExpectedKey]:
    doc = json.loads(member.etcdctl("get", "", "--prefix", "-w", "json", timeout=60))
    return [
        ExpectedKey(
            key=base64.b64decode(kv["key"]),
            value=base64.b64decode(kv.get("value", "")),
            create_revision=int(kv.get("create_revision", 0)),
            mod_revision=int(kv.get("mod_revision", 0)),
            version=int(kv.get("version", 0)),
            lease=int(kv.get("lease", 0)),
        )
        for kv in doc.get("kvs", [])
    ]


def save(member: EtcdMember, path: Path, compacted_at: int | None) -> Shot:
    keys = etcdctl_get_all(member)
    member.etcdctl("snapshot", "save", str(path), timeout=60)
    return Shot(path, keys, compacted_at, member.name, member.peer_url)


def kube_value(rng: random.Random, size: int) -> bytes:
    """Bytes shaped like a stored object: a k8s magic prefix, then mildly compressible text."""
    words = [b"metadata", b"namespace", b"kube-system", b"spec", b"containers", b"image", b"{", b"}"]
    out = bytearray(b"k8s\x00\n\x0fv1\x12\x03Pod")
    while len(out) < size:
        out += rng.choice(words) + bytes([rng.randrange(32, 127)])
    return bytes(out[:size])


def fill_busy(gw: Gateway) -> int:
    """Kubernetes-like history: many keys, overwrites, leases, big values, deletes, a compaction."""
    rng = random.Random(1234)
    names = [
        f"/registry/{RESOURCES[i % len(RESOURCES)]}/ns-{i % 17}/obj-{i:05d}".encode()
        for i in range(2500)
    ]
    gw.put_many((name, kube_value(rng, rng.randrange(100, 3000))) for name in names)
    hot = [f"/registry/leases/kube-node-lease/node-{i:03d}".encode() for i in range(150)]
    for round_ in range(12):
        gw.put_many((key, kube_value(rng, 300 + round_)) for key in hot)
    lease = gw.grant_lease(3600)
    gw.put_many(
        ((f"/registry/masterleases/10.0.0.{i}".encode(), b"k8s\x00lease") for i in range(20)),
        lease=lease,
    )
    for i in range(6):
        gw.put(f"/registry/configmaps/big/cm-{i}".encode(), kube_value(rng, 5000 + i * 3000))
    gw.put(b"/registry/secrets/big/two-hundred-k", kube_value(rng, 200_000))
    gw.put(b"/registry/secrets/big/one-point-two-mib", kube_value(rng, 1_200_000))
    for name in names[:200:3]:
        gw.delete(name)
    gw.delete(b"/registry/pods/ns-3/", b"/registry/pods/ns-30")
    compact_at = gw.put(b"/registry/ranges/serviceips", b"k8s\x00range")
    gw.compact(compact_at)
    for name in names[1000:1100]:
        gw.put(name, kube_value(rng, rng.randrange(100, 3000)))
    for name in names[1100:1150]:
        gw.delete(name)
    gw.put(b"/registry/pods/ns-3/obj-00003", b"k8s\x00recreated")
    return compact_at


def make_corpus(release: EtcdRelease, workdir: Path) -> Corpus:
    with EtcdCluster(release, workdir / "etcd") as cluster:
        member = cluster.first()
        empty = save(member, workdir / "empty.db", None)
        gw = Gateway(member.client_port)
        try:
            compact_at = fill_busy(gw)
        finally:
            gw.close()
        busy = save(member, workdir / "busy.db", compact_at)
    return Corpus(release, empty, busy)


Runner = Callable[..., "subprocess.CompletedProcess[bytes]"]
# How often a tool that could not run at all is tried before the test gives up on it.
ORACLE_ATTEMPTS = 3


def _run_status(cmd: list[str], run: Runner = subprocess.run) -> dict[str, int] | str:
    """The tool's JSON when it read the file, its error text when it refused it.

    Only a tool that could not run (timed out on a loaded machine, killed by a signal) is run
    again: that says nothing about the file. A tool that ran is asked once, whatever it answered,
    so a disagreement with lifeboat is reported, never retried away.
    """
    env = dict(os.environ, ETCDCTL_API="3")
    why = ""
    for _ in range(ORACLE_ATTEMPTS):
        try:
            done = run(cmd, capture_output=True, env=env, timeout=60)
        except subprocess.TimeoutExpired:
            why = "timed out"
            continue
        if done.returncode < 0:
            why = f"was killed by signal {-done.returncode}"
            continue
        if done.returncode != 0:
            return (done.stderr or done.stdout).decode(errors="replace")
        result: dict[str, int] = json.loads(done.stdout)
        return result
    raise AssertionError(f"{cmd[0]} could not run {ORACLE_ATTEMPTS} times (last: {why}); no oracle")


def etcdutl_status(path: Path) -> dict[str, int] | str:
    """``etcdutl snapshot status -w json`` of etcd 3.5.1."""
    etcdutl = etcd_35().etcdutl
    assert etcdutl is not None
    return _run_status([str(etcdutl), "snapshot", "status", "-w", "json", str(path)])


def etcdctl34_status(path: Path) -> dict[str, int] | str:
    """``etcdctl snapshot status -w json`` of etcd 3.4."""
    return _run_status([str(etcd_34().etcdctl), "snapshot", "status", "-w", "json", str(path)])

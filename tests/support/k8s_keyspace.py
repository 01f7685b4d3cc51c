"""A realistic Kubernetes keyspace for tests and benchmarks, built from Kubernetes' fixtures.

The stored protobuf fixtures (shared/k8s-fixtures/HEAD/*.pb) are re-encoded with new
names, namespaces, uids and ownerReferences (and without their deletionTimestamp), so
every object is a distinct, decodable object as kube-apiserver would have stored it.
Custom resources are stored as JSON; Secrets encrypted at rest with aescbc.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from lifeboat.etcdapi.wire import read_varint, write_varint

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "k8s-fixtures" / "HEAD"
MAGIC = b"k8s\x00"
AESCBC_KEY_NAME = "key1"
AESCBC_SECRET = bytes(range(32))

# ObjectMeta fields (k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto).
_NAME, _NAMESPACE, _UID, _DELETION_TS, _GRACE, _OWNERS = 1, 3, 5, 9, 10, 13

Field = tuple[int, int, bytes]  # number, wire type, encoded value (without the tag)


def parse(buf: bytes) -> list[Field]:
    """Every field of a message with its wire type, so it can be written back unchanged."""
    out: list[Field] = []
    pos = 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        start = pos
        if wire == 0:
            _, pos = read_varint(buf, pos)
            out.append((number, wire, buf[start:pos]))
        elif wire == 2:
            length, pos = read_varint(buf, pos)
            out.append((number, wire, buf[pos : pos + length]))
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            out.append((number, wire, buf[start:pos]))
        else:
            raise ValueError(f"wire type {wire}")
    return out


def encode(fields: list[Field]) -> bytes:
    out = bytearray()
    for number, wire, value in fields:
        out += write_varint(number << 3 | wire)
        if wire == 2:
            out += write_varint(len(value))
        out += value
    return bytes(out)


def _string(number: int, text: str) -> Field:
    return (number, 2, text.encode())


@dataclass(frozen=True)
class Owner:
    api_version: str
    kind: str
    name: str
    uid: str

    def encoded(self) -> bytes:
        # OwnerReference: 1 kind, 3 name, 4 uid, 5 apiVersion, 6 controller.
        return encode([_string(1, self.kind), _string(3, self.name), _string(4, self.uid),
                       _string(5, self.api_version), (6, 0, b"\x01")])


def renamed(stored: bytes, name: str, namespace: str | None, uid: str,
            owners: tuple[Owner, ...] = ()) -> bytes:
    """A stored protobuf object with a new name, namespace, uid and owners; not being deleted."""
    assert stored.startswith(MAGIC)
    envelope = parse(stored[len(MAGIC):])
    out_env: list[Field] = []
    for number, wire, value in envelope:
        if number == 2:  # runtime.Unknown.raw
            body = parse(value)
            assert body[0][0] == 1, "ObjectMeta must be field 1"
            meta = [f for f in parse(body[0][2])
                    if f[0] not in (_NAME, _NAMESPACE, _UID, _DELETION_TS, _GRACE, _OWNERS)]
            meta += [_string(_NAME, name), _string(_UID, uid)]
            if namespace is not None:
                meta.append(_string(_NAMESPACE, namespace))
            meta += [(_OWNERS, 2, o.encoded()) for o in owners]
            meta.sort(key=lambda f: f[0])
            value = encode([(1, 2, encode(meta))] + body[1:])
        out_env.append((number, wire, value))
    return MAGIC + encode(out_env)


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.pb").read_bytes()


def aescbc(plaintext: bytes, iv: bytes | None = None) -> bytes:
    """A value encrypted at rest the way kube-apiserver's aescbc provider writes it."""
    iv = iv or os.urandom(16)
    pad = 16 - len(plaintext) % 16
    enc = Cipher(algorithms.AES(AESCBC_SECRET), modes.CBC(iv)).encryptor()
    body = enc.update(plaintext + bytes([pad]) * pad) + enc.finalize()
    return f"k8s:enc:aescbc:v1:{AESCBC_KEY_NAME}:".encode() + iv + body


def encryption_config_yaml() -> str:
    secret = base64.b64encode(AESCBC_SECRET).decode()
    return ("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n"
            "- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n"
            f"      - name: {AESCBC_KEY_NAME}\n        secret: {secret}\n  - identity: {{}}\n")


# (fixture, etcd path under /registry/) of namespaced protobuf resources.
NAMESPACED = (
    ("core.v1.ConfigMap", "configmaps"),
    ("core.v1.ServiceAccount", "serviceaccounts"),
    ("core.v1.Service", "services/specs"),
    ("batch.v1.Job", "jobs"),
    ("rbac.authorization.k8s.io.v1.Role", "roles"),
    ("networking.k8s.io.v1.NetworkPolicy", "networkpolicies"),
)


@dataclass
class Keyspace:
    """Keys and stored values, plus which secret plaintexts must never be printed."""

    items: dict[bytes, bytes] = field(default_factory=dict)
    secret_plaintexts: dict[bytes, bytes] = field(default_factory=dict)

    def in_namespace(self, namespace: str) -> dict[bytes, bytes]:
        marker = f"/{namespace}/".encode()
        own = f"/registry/namespaces/{namespace}".encode()
        return {k: v for k, v in self.items.items() if marker in k or k == own}


def _namespace_items(ns: str, per_kind: int, space: Keyspace) -> None:
    put = space.items.__setitem__
    put(f"/registry/namespaces/{ns}".encode(), renamed(fixture("core.v1.Namespace"), ns, None, f"uid-ns-{ns}"))
    for fixture_name, path in NAMESPACED:
        for i in range(per_kind):
            name = f"{path.split('/')[0]}-{i}"
            put(f"/registry/{path}/{ns}/{name}".encode(),
                renamed(fixture(fixture_name), name, ns, f"uid-{ns}-{path}-{i}"))
    # A Deployment owning a ReplicaSet owning Pods; names sort opposite to ownership.
    deploy = Owner("apps/v1", "Deployment", "zz-web", f"uid-{ns}-deploy")
    rs = Owner("apps/v1", "ReplicaSet", "web-5d4f", f"uid-{ns}-rs")
    put(f"/registry/deployments/{ns}/zz-web".encode(),
        renamed(fixture("apps.v1.Deployment"), deploy.name, ns, deploy.uid))
    put(f"/registry/replicasets/{ns}/web-5d4f".encode(),
        renamed(fixture("apps.v1.ReplicaSet"), rs.name, ns, rs.uid, (deploy,)))
    for i in range(per_kind):
        put(f"/registry/pods/{ns}/a-web-5d4f-{i}".encode(),
            renamed(fixture("core.v1.Pod"), f"a-web-5d4f-{i}", ns, f"uid-{ns}-pod-{i}", (rs,)))
    secret_key = f"/registry/secrets/{ns}/db-password".encode()
    plain = renamed(fixture("core.v1.Secret"), "db-password", ns, f"uid-{ns}-secret")
    put(secret_key, aescbc(plain))
    space.secret_plaintexts[secret_key] = plain
    for i in range(per_kind):
        doc = {"apiVersion": "example.com/v1", "kind": "Widget",
               "metadata": {"name": f"widget-{i}", "namespace": ns, "uid": f"uid-{ns}-widget-{i}",
                            "creationTimestamp": "2024-05-01T10:00:00Z", "labels": {"app": "web"}},
               "spec": {"size": i}}
        put(f"/registry/example.com/widgets/{ns}/widget-{i}".encode(),
            json.dumps(doc, separators=(",", ":")).encode())


def build_keyspace(namespaces: tuple[str, ...] = ("team-a", "team-b", "kube-system"),
                   per_kind: int = 2) -> Keyspace:
    """Namespaces of several kinds each, plus cluster-scoped nodes and cluster roles."""
    space = Keyspace()
    for ns in namespaces:
        _namespace_items(ns, per_kind, space)
    for i in range(2):
        space.items[f"/registry/minions/node-{i}".encode()] = renamed(
            fixture("core.v1.Node"), f"node-{i}", None, f"uid-node-{i}")
        space.items[f"/registry/clusterroles/role-{i}".encode()] = renamed(
            fixture("rbac.authorization.k8s.io.v1.ClusterRole"), f"role-{i}", None, f"uid-cr-{i}")
    return space


def iter_items(space: Keyspace) -> Iterator[tuple[bytes, bytes]]:
    yield from sorted(space.items.items())

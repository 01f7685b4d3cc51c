"""``make demo``: back up a local etcd the way an operator would on a kubeadm node.

It starts etcd 3.5.1 over mTLS on free loopback ports, lays out a kubeadm-like control-plane
node under ``demo-work/node`` (so lifeboat finds etcd and its certificates with no flags),
writes a few thousand Kubernetes-like keys, then runs the real ``lifeboat`` commands:
backup (encrypted), list, show, verify, snapshot save/status — narrating each step.
Everything it starts is stopped at the end.
"""

from __future__ import annotations

import json
import random
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyrage

from lifeboat.demo.local_etcd import LocalEtcd, etcd_bin_dir
from lifeboat.demo.node import make_node
from lifeboat.demo.pki import make_pki
from lifeboat.etcd import ConnectionSettings, EtcdClient, Put, TlsConfig

WORK = Path("demo-work")
LIFEBOAT = Path(sys.executable).parent / "lifeboat"
KINDS = ("pods", "configmaps", "secrets", "serviceaccounts", "services/specs", "deployments", "replicasets")


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def run(*args: str) -> str:
    shown = " ".join(shlex.quote(a) for a in ("lifeboat", *args))
    print(f"$ {shown}", flush=True)
    done = subprocess.run([str(LIFEBOAT), *args], capture_output=True, text=True)
    sys.stdout.write(done.stdout)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"demo: '{shown}' failed with exit code {done.returncode}")
    return done.stdout


def kubernetes_like_objects(count: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(42)
    items = []
    for ns in range(12):
        namespace = f"team-{ns:02d}"
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        items.append((f"/registry/namespaces/{namespace}".encode(), json.dumps(body).encode()))
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        namespace = f"team-{i % 12:02d}"
        name = f"{kind.split('/')[0][:-1]}-{i:05d}"
        body = {"kind": kind, "metadata": {"name": name, "namespace": namespace, "uid": f"{rng.getrandbits(64):016x}"},
                "data": {"blob": rng.randbytes(rng.randint(200, 3000)).hex()}}
        items.append((f"/registry/{kind}/{namespace}/{name}".encode(), json.dumps(body).encode()))
    return items


def load(client: EtcdClient, items: list[tuple[bytes, bytes]]) -> None:
    for start in range(0, len(items), 100):
        client.txn([], [Put(k, v) for k, v in items[start : start + 100]])


def main() -> int:
    started = time.monotonic()
    if WORK.exists():
        shutil.rmtree(WORK)
    say("Setting up a kubeadm-like control-plane node in demo-work/node with a real etcd 3.5.1 (mTLS)")
    pki = make_pki(WORK / "pki")
    etcd = LocalEtcd(WORK / "etcd", pki)
    node = make_node(WORK / "node", pki, etcd.client_url, etcd.peer_url, etcd.data_dir)
    print(f"etcd listens on {etcd.client_url}; its static-pod manifest is {node / 'etc/kubernetes/manifests/etcd.yaml'}")
    etcd.start()
    try:
        return _story(etcd, node, pki.ca, started)
    finally:
        etcd.stop()
        print("\n(etcd stopped; everything the demo made is in demo-work/)")


def _story(etcd: LocalEtcd, node: Path, ca: Path, started: float) -> int:
    tls = TlsConfig(node / "etc/kubernetes/pki/etcd/ca.crt",
                    node / "etc/kubernetes/pki/etcd/healthcheck-client.crt",
                    node / "etc/kubernetes/pki/etcd/healthcheck-client.key")
    items = kubernetes_like_objects(3000)
    with EtcdClient(ConnectionSettings((etcd.client_url,), tls)) as client:
        load(client, items)
        client.delete_range(b"/registry/pods/team-00/pod-00000")
        print(f"wrote {len(items)} Kubernetes-like objects under /registry and deleted one pod")

    identity = pyrage.x25519.Identity.generate()
    key_file = WORK / "age-key.txt"
    key_file.write_text(f"# demo key: keep real ones somewhere safer than the backup\n{identity}\n")
    key_file.chmod(0o600)
    recipient = str(identity.to_public())
    repo = f"file://{(WORK / 'repo').resolve()}"

    say("Backup with zero etcd flags: endpoint and client certificate come from the etcd static pod")
    run("backup", "--root", str(node), "--repo", repo, "--cluster", "demo", "--encrypt-to", recipient)

    say("What the repository holds")
    run("list", "--repo", repo)
    run("show", "latest", "--repo", repo)

    say("Verify: fetch, decrypt, decompress, check every sha256, read the snapshot offline")
    run("verify", "latest", "--repo", repo, "--identity", str(key_file),
        "--save-snapshot", str(WORK / "restored-from-backup.db"))

    say("A raw etcdctl-compatible snapshot, and its status next to etcdutl's")
    run("snapshot", "save", str(WORK / "snapshot.db"), "--root", str(node))
    ours = json.loads(run("snapshot", "status", str(WORK / "snapshot.db"), "-w", "json"))
    theirs = json.loads(subprocess.run(
        [str(etcd_bin_dir() / "etcdutl"), "snapshot", "status", str(WORK / "snapshot.db"), "-w", "json"],
        capture_output=True, text=True, check=True).stdout)
    print(f"etcdutl snapshot status says: {json.dumps(theirs)}")
    if ours != theirs:
        raise SystemExit("demo: lifeboat and etcdutl disagree about the snapshot")
    print("lifeboat and etcdutl agree.")

    say("Opening the backup by hand, with no lifeboat at all")
    backup_dir = next((WORK / "repo/clusters/demo/backups").iterdir())
    print(f"age -d -i {key_file} {backup_dir}/snapshot.db.zst.age | zstd -d > snapshot.db")
    print("etcdutl snapshot restore snapshot.db --data-dir /var/lib/etcd-restored ...")
    print(f"\nDemo finished in {time.monotonic() - started:.1f}s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

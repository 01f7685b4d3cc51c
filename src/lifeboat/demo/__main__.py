"""``make demo``: the whole story on three kubeadm-like control-plane nodes on this machine.

Three etcd 3.5.1 members over mTLS on loopback, each on its own node root under
``demo-work/`` (``etc/kubernetes`` with certificates and static-pod manifests,
``var/lib/etcd``), each run by a small stand-in for the kubelet. The demo writes
Kubernetes-like data, takes an encrypted backup with zero etcd flags, proves it with a drill,
then loses two members and their disks, shows ``lifeboat status`` saying quorum is lost,
restores all three nodes from the one backup, and checks that every key is back. Then it runs
``lifeboat capture``, edits a few objects, deletes a namespace by mistake, and brings that
namespace back as it was a second before (``lifeboat k8s undelete --to-time``), checking that
it is exactly as it was and that no other key changed.
Everything it starts is stopped at the end, whatever happens.
"""

from __future__ import annotations

import json
import random
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pyrage

from lifeboat.clock import SystemClock, wait_for
from lifeboat.demo.kubelet import DemoKubelet
from lifeboat.demo.node import demo_member, etcd_bin_dir, make_node
from lifeboat.demo.pki import Pki, make_pki
from lifeboat.etcd import ConnectionSettings, EtcdClient, Put, TlsConfig
from lifeboat.etcd.local import LocalEtcd, ReservedPort

WORK = Path("demo-work")
LIFEBOAT = [sys.executable, "-m", "lifeboat.cli.main"]
CLOCK = SystemClock()  # the demo runs real processes on real time
NAMESPACE = "team-03"  # the one deleted by mistake and brought back
KINDS = ("pods", "configmaps", "secrets", "serviceaccounts", "services/specs", "deployments", "replicasets")


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def run(*args: str, ok: tuple[int, ...] = (0,), head: int | None = None, resume: str = "") -> str:
    """Run lifeboat, show its output and return it. With ``head``, a long output is shown as its
    first ``head`` lines, then from the first line starting with ``resume`` on."""
    shown = " ".join(shlex.quote(a) for a in ("lifeboat", *args))
    print(f"$ {shown}", flush=True)
    done = subprocess.run([*LIFEBOAT, *args], capture_output=True, text=True)
    out = done.stdout.splitlines(keepends=True)
    end = next((i for i, line in enumerate(out) if resume and line.startswith(resume)), len(out))
    if head is not None and end > head + 1:
        out = [*out[:head], f"  ... {end - head} lines more\n", *out[end:]]
    sys.stdout.write("".join(out))
    if done.returncode not in ok:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"demo: '{shown}' failed with exit code {done.returncode}")
    if done.returncode:
        print(f"(exit code {done.returncode}, as expected)")
    return done.stdout


@dataclass
class Node:
    root: Path
    etcd: LocalEtcd
    kubelet: DemoKubelet
    apiserver_port: ReservedPort  # the fake kube-apiserver stops and starts on it with each restore


def make_nodes(pki: Pki, count: int = 3) -> list[Node]:
    members = [
        demo_member(f"cp-{i}", WORK / f"node-{i}/var/lib/etcd", WORK / f"logs/etcd-cp-{i}.log", pki)
        for i in range(count)
    ]
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    nodes = []
    for i, member in enumerate(members):
        member.initial_cluster = initial
        apiserver = ReservedPort()
        root = make_node(WORK / f"node-{i}", pki, member, apiserver.port)
        nodes.append(Node(root, member, DemoKubelet(root, member, apiserver.port), apiserver))
    return nodes


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


def in_namespace(keys: dict[bytes, bytes], namespace: str) -> dict[bytes, bytes]:
    """Of ``keys``, the namespace's own object and every object in it."""
    inside = f"/{namespace}/".encode()
    own = f"/registry/namespaces/{namespace}".encode()
    return {k: v for k, v in keys.items() if inside in k or k == own}


def client(nodes: list[Node], pki: Pki) -> EtcdClient:
    tls = TlsConfig(pki.ca, pki.client.cert, pki.client.key)
    return EtcdClient(ConnectionSettings(tuple(n.etcd.client_url for n in nodes), tls))


def keyspace(nodes: list[Node], pki: Pki) -> tuple[int, dict[bytes, bytes]]:
    with client(nodes, pki) as c:
        page = c.range(b"\0", limit=1)
        return page.revision, {kv.key: kv.value for kv in c.range_all(b"", prefix=True)}


def wait_healthy(nodes: list[Node], pki: Pki, timeout: float = 60) -> None:
    # A client per poll: a channel whose connection was refused (etcd not listening yet) tries
    # again only after gRPC's reconnect backoff, seconds later (as LocalEtcd.wait_ready says).
    def healthy() -> bool:
        try:
            with client(nodes, pki) as c:
                return all(c.status(n.etcd.client_url).leader_id for n in nodes)
        except Exception:  # not up yet: keep polling until the deadline
            return False

    if not CLOCK.wait_until(healthy, timeout, 0.2):
        raise SystemExit("demo: the etcd cluster did not become healthy")


def main() -> int:
    started = CLOCK.monotonic()
    if WORK.exists():
        shutil.rmtree(WORK)
    say("Three kubeadm-like control-plane nodes (demo-work/node-0..2), etcd 3.5.1 over mTLS on loopback")
    pki = make_pki(WORK / "pki")
    nodes = make_nodes(pki)
    for node in nodes:
        print(f"{node.root}: member {node.etcd.name} at {node.etcd.client_url}, data in {node.etcd.data_dir}")
        node.kubelet.up()
    try:
        wait_healthy(nodes, pki)
        return Story(nodes, pki, started).tell()
    finally:
        for node in nodes:
            node.kubelet.down()
        print("\n(every etcd the demo started is stopped; its files are in demo-work/)")


def _stopped(journal: Path) -> bool:
    """Whether lifeboat's journal says it has stopped etcd on that node (its manifest went away)."""
    try:
        return "stop:etcd" in json.loads(journal.read_text()).get("done", ())
    except (OSError, ValueError):
        return False


class Story:
    def __init__(self, nodes: list[Node], pki: Pki, started: float) -> None:
        self.nodes, self.pki, self.started = nodes, pki, started
        self.repo = f"file://{(WORK / 'repo').resolve()}"
        self.key_file = WORK / "age-key.txt"
        self.endpoints = ",".join(n.etcd.client_url for n in nodes)
        self.tls = [f"--cacert={pki.ca}", f"--cert={pki.client.cert}", f"--key={pki.client.key}"]

    def tell(self) -> int:
        before = self.write_data()
        self.back_up()
        self.disaster()
        self.restore_everything()
        self.prove(before)
        self.capture_and_undo()
        print(f"\nDemo finished in {CLOCK.monotonic() - self.started:.0f}s.")
        return 0

    def write_data(self) -> tuple[int, dict[bytes, bytes]]:
        items = kubernetes_like_objects(3000)
        with client(self.nodes, self.pki) as c:
            for start in range(0, len(items), 100):
                c.txn([], [Put(k, v) for k, v in items[start : start + 100]])
            c.delete_range(b"/registry/pods/team-00/pod-00000")
        print(f"wrote {len(items)} Kubernetes-like objects under /registry and deleted one pod")
        return keyspace(self.nodes, self.pki)

    def back_up(self) -> None:
        identity = pyrage.x25519.Identity.generate()
        self.key_file.write_text(f"# demo key: keep real ones somewhere safer than the backup\n{identity}\n")
        self.key_file.chmod(0o600)
        self.recipient = str(identity.to_public())
        say("Backup from node-0 with zero etcd flags: endpoint and certificate come from its etcd static pod")
        run("backup", "--root", str(self.nodes[0].root), "--repo", self.repo, "--cluster", "demo",
            "--encrypt-to", str(identity.to_public()))
        run("list", "--repo", self.repo)
        say("A drill proves the backup: restore it into a throwaway etcd and compare")
        run("verify", "latest", "--drill", "--repo", self.repo, "--identity", str(self.key_file))
        say("lifeboat reads snapshots offline with the same answers as etcdutl")
        snap = WORK / "snapshot.db"
        run("snapshot", "save", str(snap), "--endpoints", self.nodes[0].etcd.client_url, *self.tls)
        ours = json.loads(run("snapshot", "status", str(snap), "-w", "json"))
        theirs = json.loads(subprocess.run([str(etcd_bin_dir() / "etcdutl"), "snapshot", "status", str(snap), "-w", "json"],
                                           capture_output=True, text=True, check=True).stdout)
        print(f"etcdutl snapshot status says: {json.dumps(theirs)}" + ("  (the same)" if ours == theirs else ""))
        if ours != theirs:
            raise SystemExit("demo: lifeboat and etcdutl disagree about the snapshot")

    def disaster(self) -> None:
        say("Disaster: node-1 and node-2 die and their disks are lost")
        for node in self.nodes[1:]:
            node.kubelet.down()
            shutil.rmtree(node.etcd.data_dir)
            print(f"{node.root}: etcd killed, {node.etcd.data_dir} gone")
        CLOCK.sleep(1.5)  # long enough for node-0 to notice it has lost its peers
        run("status", "--endpoints", self.endpoints, *self.tls, "--dial-timeout", "1", ok=(0, 1, 2))

    def restore_everything(self) -> None:
        say("The plan: every member restored from the same backup, with one new cluster token")
        run("restore", "plan", "latest", "--repo", self.repo, "--initial-cluster", self.nodes[0].etcd.initial_cluster)
        say("Restore all three nodes at once, as three operators would (node-1 and node-2 are back, empty)")
        token = f"demo-restored-{int(CLOCK.now().timestamp())}"
        procs = []
        for node in self.nodes:
            argv = ["restore", "latest", "--root", str(node.root), "--repo", self.repo,
                    "--identity", str(self.key_file), "--initial-cluster-token", token, "--wait-timeout", "60"]
            print("$ " + " ".join(shlex.quote(a) for a in ("lifeboat", *argv)))
            log = (WORK / "logs" / f"restore-{node.etcd.name}.log").open("w")
            procs.append((node, log, subprocess.Popen([*LIFEBOAT, *argv], stdout=log, stderr=subprocess.STDOUT)))
        # The replaced machines' kubelets come up once lifeboat has taken etcd's manifest away,
        # so they never start an empty etcd. Each node is watched on its own: a restore can hold
        # and release the manifest within a fraction of a second.
        watchers = [threading.Thread(target=self._bring_up_when_held, args=(node, proc))
                    for node, _, proc in procs[1:]]
        for watcher in watchers:
            watcher.start()
        for watcher in watchers:
            watcher.join()
        failed = []
        for node, log, proc in procs:
            code = proc.wait(timeout=180)
            log.close()
            print(f"--- {node.root}: lifeboat restore exited {code}")
            lines = (WORK / "logs" / f"restore-{node.etcd.name}.log").read_text().splitlines()
            # The first node's output in full (its plan, then each step as it runs); the others'
            # outcome only: their plans differ in names and paths alone.
            shown = lines if node is self.nodes[0] or code else [ln for ln in lines if ln.startswith("restored ")]
            print("\n".join(shown))
            if code != 0:
                failed.append(node.etcd.name)
        if failed:
            raise SystemExit(f"demo: the restore failed on {', '.join(failed)}")

    def _bring_up_when_held(self, node: Node, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
        held = node.root / "etc/kubernetes/lifeboat-held-manifests/etcd.yaml"
        journal = node.etcd.data_dir.with_name("etcd.lifeboat-restore.json")  # lifeboat's step journal

        def taken() -> bool | None:
            """True once lifeboat took etcd's manifest away (or stopped it), False if the restore ended first."""
            if not node.kubelet.etcd_manifest.exists() or held.exists() or _stopped(journal):
                return True
            return False if proc.poll() is not None else None

        if wait_for(CLOCK, taken, timeout, 0.01):  # else the restore ended or never got there: its exit code tells
            node.kubelet.up()

    def prove(self, before: tuple[int, dict[bytes, bytes]]) -> None:
        say("Proof: the cluster is healthy and every key is back")
        run("status", "--endpoints", self.endpoints, *self.tls)
        revision, keys = keyspace(self.nodes, self.pki)
        old_revision, old_keys = before
        same = keys == old_keys
        print(f"before the disaster: revision {old_revision}, {len(old_keys)} keys; "
              f"after the restore: revision {revision}, {len(keys)} keys; every key and value identical: {same}")
        moved = sorted(p.name for p in self.nodes[0].etcd.data_dir.parent.glob("etcd.lifeboat-moved-*"))
        print(f"node-0's old data dir was kept, not deleted: {', '.join(moved)}")
        if not same:
            raise SystemExit("demo: the restored keyspace differs from the one backed up")

    def capture_and_undo(self) -> None:
        say("Continuous capture: every change is in the repository within about a second")
        argv = ["capture", "--root", str(self.nodes[0].root), "--repo", self.repo, "--cluster", "demo",
                "--encrypt-to", self.recipient]
        print("$ " + " ".join(shlex.quote(a) for a in ("lifeboat", *argv)) + " &")
        log_path = WORK / "logs" / "capture.log"
        with log_path.open("w") as log:
            capture = subprocess.Popen([*LIFEBOAT, *argv], stdout=log, stderr=subprocess.STDOUT)
        try:
            started_at, start = keyspace(self.nodes, self.pki)
            self._wait_captured(capture, started_at, log_path)
            edited = sorted(k for k in in_namespace(start, NAMESPACE) if k.startswith(b"/registry/configmaps/"))[:5]
            with client(self.nodes, self.pki) as c:
                for round_ in range(3):  # the team keeps working: three edits of a few ConfigMaps
                    for key in edited:
                        body = json.loads(start[key])
                        body["data"]["edit"] = round_
                        c.put(key, json.dumps(body).encode())
            edited_at, at_point = keyspace(self.nodes, self.pki)
            kept = in_namespace(at_point, NAMESPACE)
            # The point: a whole second after capture has seen the edits (however loaded the
            # machine), and before the mistake.
            self._wait_captured(capture, edited_at, log_path)
            now = CLOCK.now().astimezone()
            moment = now.replace(microsecond=0) + timedelta(seconds=1)
            point = moment.isoformat()
            CLOCK.sleep((moment - now).total_seconds() + 0.5)
            print(f"{point}: namespace {NAMESPACE} holds {len(kept)} objects (some ConfigMaps just edited)")
            say(f"A mistake: namespace {NAMESPACE} is deleted with everything in it")
            with client(self.nodes, self.pki) as c:
                for key in sorted(kept):
                    c.delete_range(key)
            revision, everything = keyspace(self.nodes, self.pki)
            print(f"deleted {len(kept)} objects; {len(everything)} keys left in the cluster")
            self._wait_captured(capture, revision, log_path)
            run("timeline", "--repo", self.repo)
            say(f"Bring {NAMESPACE} back as it was at {point}, without rolling anything else back")
            run("k8s", "undelete", "--from", "latest", "--to-time", point, "-n", NAMESPACE, "--apply",
                "--root", str(self.nodes[0].root), "--repo", self.repo, "--identity", str(self.key_file),
                head=6, resume="wrote ")
            after = keyspace(self.nodes, self.pki)[1]
            back = in_namespace(after, NAMESPACE)
            others = {k: v for k, v in after.items() if k not in back}
            same = back == kept and others == everything
            print(f"{NAMESPACE}: {len(back)} objects back, each as it was at {point}: {back == kept}; "
                  f"every other key untouched: {others == everything}")
            if not same:
                raise SystemExit(f"demo: {NAMESPACE} did not come back as it was")
        finally:
            capture.send_signal(signal.SIGTERM)
            try:
                code = capture.wait(timeout=60)
            except subprocess.TimeoutExpired:
                capture.kill()  # nothing the demo started may outlive it
                code = capture.wait()
            print(f"capture stopped (SIGTERM commits what it has): exit code {code}; its log: {log_path}")
        if code != 0:
            raise SystemExit(f"demo: lifeboat capture exited {code}; see {log_path}")

    def _wait_captured(self, capture: subprocess.Popen[bytes], revision: int, log_path: Path,
                       timeout: float = 60) -> None:
        """Until capture's segments reach ``revision`` (the timeline's open window ends at or after it)."""
        def reached() -> bool | None:
            if capture.poll() is not None:
                return False
            done = subprocess.run([*LIFEBOAT, "timeline", "--repo", self.repo, "-o", "json"],
                                  capture_output=True, text=True)
            if done.returncode:
                return None
            found = json.loads(done.stdout)
            clusters = found if isinstance(found, list) else [found]
            ends = [w["last_revision"] for t in clusters for w in t["windows"] if w["capturing"]]
            return True if ends and max(ends) >= revision else None

        if not wait_for(CLOCK, reached, timeout, 0.3):
            tail = "\n".join(log_path.read_text().splitlines()[-5:])
            raise SystemExit(f"demo: capture did not reach revision {revision}:\n{tail}")


if __name__ == "__main__":
    sys.exit(main())

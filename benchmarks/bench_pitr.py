"""Point-in-time restore of a 1 GB base plus 1,000,000 captured events, against restoring the base alone.

Usage: ``python benchmarks/bench_pitr.py [--events N] [--mix kube|creates] [--revisions-per-segment N] [--packed]
[--rounds R] [--store s3|dir] [--size-mib M] [--end-state] [--rev COMMIT] [--work DIR] [--json PATH]`` (``--rev``: measure another commit's restore, for an A/B
on one machine).

Set-up (cached in the work dir, ``--work``, default ``bench-work/pitr/``, reused by later runs
in the same work dir):

* the ~1 GB Kubernetes-like snapshot (``benchmarks/dataset.py``, cached in ``bench-work``) is
  served by etcd 3.5.1 and backed up with ``lifeboat backup`` into the repository (SeaweedFS S3
  by default): the base;
* a capture chain after it of ``--events`` events (default 1,000,000), written as capture
  writes them (``ChainStore.commit_segment``: the current segment format, zstd level 3, segments of
  2,000 revisions, or ``--revisions-per-segment``, seen 10 revisions per 5 ms) from a Kubernetes-like write mix: node lease
  renewals (~400 B values), Event objects created with a lease (~800 B) and later deleted, pod
  status updates (3-6 KiB), 10 % of revisions a three-operation transaction. The watch's
  ``mvccpb.KeyValue`` bytes are produced as the watch decode keeps them. Generating them
  offline rather than through etcd keeps a million puts off the shared two cores; the restore
  path is the same. ``--mix creates`` writes the replay's worst shape instead: every event a
  put that creates a key (~1 KiB values), so every event is a row to write and a key to index.
  ``--revisions-per-segment 100`` gives the chain of a cluster writing about 100 revisions a
  second, one segment a second as capture closes them: ten thousand small segments instead of
  five hundred large ones, each one more request to the store. ``--packed`` then runs
  ``lifeboat pack`` over that chain (``--min-age 0 --delete-after 0``, twice: the first run
  writes the packs, the second deletes what they hold) in a repository of its own
  (``...-packed``), timed once, and measures the restores from the packed chain.

Measured on a kubeadm-like node (the demo's stand-in kubelet, etcd 3.5.1, mTLS), each ending
with a started, healthy member; the two restores swap places every round, and each starts once the
machine has settled (``bench_restore.settle``: dirty pages flushed, the member's start-up
compaction of the restore before it finished, and on a VM that reports free pages, the memory
freed before handed back to the host, so both start with the same free memory); the base is read
once, untimed, before the first round. Each restore's CPU seconds (and of them the system
seconds: on a VM whose freed memory goes back to the host, writing a GB of new file pages costs
seconds of kernel time that vary from one run to the next), its fetch step, peak RSS and the CPU
seconds the host took from the VM meanwhile (``steal``: a round that lost seconds to other guests
shows it) are reported beside its time:

* ``lifeboat restore --to-revision LAST`` (base + every event, default revision bump);
* ``lifeboat restore BASE`` (the base alone, default revision bump);
* downloading every segment of the chain from the store (as many at a time as the restore's survey);
* with ``--end-state``, ``lifeboat restore END``: a full backup of the point's state (taken once,
  by ``lifeboat backup`` of the member a point restore left, into a repository of its own beside
  the chain's, ``...-end``), the three restores' order reversed every round. It tells what
  restoring that much data costs without the chain: for ``--mix creates`` the point's store is
  twice the base, and a full backup of it is restored that much slower too.

Target (issue #8): the first ≤ 1.5 × (the second + the third). With ``--end-state`` the report
adds the point restore against (the end state's restore + the download), and the end state's
restore against the target's denominator. The apply rate is the events
divided by the restore's ``replay-capture`` step. Results go to ``bench-work/bench_pitr.json``
(``bench_pitr_creates.json`` for ``--mix creates``; in the ``--work`` dir when one other than the
default is given; ``--json`` names another file) and a
Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_backup import LIFEBOAT, frozen_source  # noqa: E402
from benchmarks import rss  # noqa: E402
from benchmarks.bench_restore import memory_reporting, settle, stolen_s, take_backup, wait_answers  # noqa: E402
from benchmarks.dataset import BENCH_WORK, _kube_like, make_snapshot, results_dir, work_dir  # noqa: E402
from lifeboat.catalog.chains import ChainInfo, ChainStore  # noqa: E402
from lifeboat.catalog.repository import BackupRepository  # noqa: E402
from lifeboat.catalog.segments import CapturedRevision, Predecessor, Segment  # noqa: E402
from lifeboat.pitr.survey_run import FETCH_THREADS  # noqa: E402
from lifeboat.demo.kubelet import DemoKubelet  # noqa: E402
from lifeboat.demo.node import demo_member, make_node  # noqa: E402
from lifeboat.demo.pki import make_pki  # noqa: E402
from lifeboat.etcd.local import ReservedPort  # noqa: E402
from lifeboat.etcdapi.model import EventType, KeyValue, WatchEvent  # noqa: E402
from lifeboat.etcdapi.proto import kv_pb2  # noqa: E402
from lifeboat.snapshot import read_meta, snapshot_status  # noqa: E402
from lifeboat.store import open_store  # noqa: E402
from tests.support.binaries import weed  # noqa: E402
from tests.support.seaweed import SeaweedServer  # noqa: E402
from benchmarks.teardown import on_termination  # noqa: E402

REVISIONS_PER_SEGMENT = 2000
NODES = 1000
EVENT_TTL = 3600


class KubeWrites:
    """A Kubernetes-like stream of watch events after ``revision``."""

    def __init__(self, revision: int, seed: int = 8) -> None:
        self.rng = random.Random(seed)
        self.revision = revision
        self.created: dict[bytes, tuple[int, int]] = {}  # key -> (create revision, version)
        self.live_events: list[bytes] = []
        self.leases = [0x7E57_0000 + n for n in range(16)]
        self.values = {size: [_kube_like(self.rng, size) for _ in range(64)] for size in (400, 800, 3000, 6000)}
        self.serial = 0

    def _put(self, key: bytes, size: int, lease: int = 0) -> WatchEvent:
        create, version = self.created.get(key, (self.revision, 0))
        self.created[key] = (create, version + 1)
        # An update rewrites a few fields (times, uids) of an object much like its others.
        template = self.rng.choice(self.values[size])
        cut = self.rng.randrange(len(template) - 40)
        value = template[:cut] + self.rng.randbytes(20).hex().encode() + template[cut + 40:]
        kv = KeyValue(key, value, create, self.revision, version + 1, lease)
        raw = kv_pb2.KeyValue(key=key, value=value, create_revision=create, mod_revision=self.revision,
                              version=version + 1, lease=lease).SerializeToString()
        return WatchEvent(EventType.PUT, kv, kv_bytes=raw)

    def _delete(self, key: bytes) -> WatchEvent:
        del self.created[key]
        return WatchEvent(EventType.DELETE, KeyValue(key, b"", 0, self.revision, 0))

    def _operation(self) -> WatchEvent:
        roll = self.rng.random()
        if roll < 0.5:
            return self._put(b"/registry/leases/kube-node-lease/bench-node-%04d" % self.rng.randrange(NODES), 400)
        if roll < 0.75:
            self.serial += 1
            key = b"/registry/events/bench/pod-%06d.%08x" % (self.serial % 100_000, self.serial)
            self.live_events.append(key)
            return self._put(key, 800, lease=self.rng.choice(self.leases))
        if roll < 0.9 or not self.live_events:
            size = 3000 if self.rng.random() < 0.5 else 6000
            return self._put(b"/registry/pods/bench/pod-%06d" % self.rng.randrange(20_000), size)
        return self._delete(self.live_events.pop(self.rng.randrange(len(self.live_events))))

    def revisions(self, events: int, start: datetime) -> Iterator[CapturedRevision]:
        made = 0
        while made < events:
            self.revision += 1
            count = 3 if self.rng.random() < 0.1 else 1
            batch: list[WatchEvent] = []
            keys: set[bytes] = set()
            while len(batch) < min(count, events - made):
                event = self._operation()
                if event.kv.key in keys:  # one key once per transaction, as etcd requires
                    continue
                keys.add(event.kv.key)
                batch.append(event)
            made += len(batch)
            # Capture stamps each watch response's revisions with one time; a response every 5 ms.
            yield CapturedRevision(self.revision, start + timedelta(milliseconds=5 * (made // 10)), tuple(batch))


class CreateWrites(KubeWrites):
    """The replay's worst shape: every put creates a key (ConfigMap-like values of ~1 KiB), so
    each event is a row of the point's db and a key etcd's index must hold."""

    def _operation(self) -> WatchEvent:
        self.serial += 1
        return self._put(b"/registry/configmaps/bench/cm-%07d" % self.serial, 800)


MIXES: dict[str, type[KubeWrites]] = {"kube": KubeWrites, "creates": CreateWrites}


def write_chain(repo: BackupRepository, manifest: dict[str, object], db: Path, events: int,
                mix: str = "kube", per_segment: int = REVISIONS_PER_SEGMENT) -> int:
    """Store ``events`` events after the base as a capture chain; its last revision."""
    meta = read_meta(db)
    base_revision = max(snapshot_status(db).revision, meta.finished_compact_revision or 0,
                        meta.scheduled_compact_revision or 0, 1)
    backup_id = str(manifest["id"])
    source = manifest["source"]
    assert isinstance(source, dict)
    info = ChainInfo(chain=backup_id, cluster="bench", base_backup=backup_id, base_revision=base_revision,
                     cluster_id=str(source["cluster_id"]), started_at=str(manifest["finished_at"]))
    chains = ChainStore(repo.store)
    chains.start(info)
    writes = MIXES[mix](base_revision)
    previous = Predecessor("base", base_revision, backup_id)
    pending: list[CapturedRevision] = []
    ttls = {lease: EVENT_TTL for lease in writes.leases}

    def commit() -> None:
        nonlocal previous
        segment = Segment("bench", backup_id, previous, tuple(pending), ttls if previous.kind == "base" else {})
        ref = chains.commit_segment(segment, (), 3)
        previous = Predecessor("segment", segment.last_revision, ref.name)
        pending.clear()

    for revision in writes.revisions(events, datetime.now(UTC) - timedelta(hours=1)):
        pending.append(revision)
        if len(pending) == per_segment:
            commit()
    if pending:
        commit()
    return writes.revision


def pack_chain(repo: str, env: dict[str, str], out: Path) -> None:
    """``lifeboat pack`` twice (packs written, then what they hold deleted); time and CPU of each
    into ``out``."""
    runs = []
    for _ in range(2):
        measured = rss.run([*LIFEBOAT, "pack", "--repo", repo, "--cluster", "bench", "--min-age", "0",
                            "--delete-after", "0", "-o", "json"], env, capture=True)
        if measured.exit_code != 0:
            raise SystemExit(f"lifeboat pack failed (exit {measured.exit_code})")
        runs.append({"wall_s": measured.wall_s, "cpu_s": measured.cpu_s,
                     "peak_rss_mb": measured.own_peak_bytes / 2**20, "result": _json_in(measured.output)})
        print(f"pack: {runs[-1]}", file=sys.stderr)
    out.write_text(json.dumps(runs, indent=2))


def _json_in(output: bytes) -> object:
    text = output.decode()
    return json.loads(text[text.index("{"):])


def timed_restore(root: Path, repo: str, env: dict[str, str], *args: str) -> tuple[float, dict[str, float], rss.Measured]:
    """Run ``lifeboat restore``; wall seconds, when each step began (its progress lines), and
    its peak RSS and CPU seconds."""
    lines: list[tuple[float, str]] = []
    measured = rss.run([*LIFEBOAT, "restore", *args, "--root", str(root), "--repo", repo, "--cluster", "bench",
                        "--force"], dict(env, PYTHONUNBUFFERED="1"), capture=True,
                       lines=lambda at, line: lines.append((at, line.decode(errors="replace").rstrip())))
    if measured.exit_code != 0:
        raise SystemExit("lifeboat restore failed:\n" + "\n".join(text for _, text in lines[-20:]))
    total = measured.wall_s
    steps = {text: at for at, text in lines if text.startswith("[")}
    marks = sorted(steps.items(), key=lambda item: item[1])
    for n, (text, at) in enumerate(marks):
        took = (marks[n + 1][1] if n + 1 < len(marks) else total) - at
        print(f"  {at:7.2f}s +{took:6.2f}s {text[:100]}", file=sys.stderr)
    for at, text in lines:
        if text.startswith("replayed "):  # where the replay step's time went
            print(f"  {at:7.2f}s {text}", file=sys.stderr)
    print(f"  peak RSS {measured.own_peak_bytes / 2**20:.0f} MB (tree {measured.tree_peak_bytes / 2**20:.0f} MB), "
          f"CPU {measured.cpu_s:.1f} s", file=sys.stderr)
    return total, steps, measured


def step_seconds(steps: dict[str, float], total: float, starting: str) -> float:
    """How long the step whose description starts with ``starting`` took: from its line to the
    next step's."""
    marks = sorted(steps.items(), key=lambda item: item[1])
    for n, (text, at) in enumerate(marks):
        if text.split("] ", 1)[-1].startswith(starting):  # the fetch step names the replay too
            return (marks[n + 1][1] if n + 1 < len(marks) else total) - at
    raise SystemExit(f"the restore printed no {starting} step:\n" + "\n".join(steps))


def read_once(repo: BackupRepository, backup_id: str) -> None:
    """Read every object of a backup once, untimed (into the object store's page cache)."""
    for obj in repo.store.list(f"clusters/bench/backups/{backup_id}/"):
        for _chunk in repo.store.get_stream(obj.key):
            pass


def download_seconds(repo: str, env: dict[str, str]) -> tuple[float, int]:
    """Seconds to read every segment of the chain, as many at a time as the restore's survey
    reads them (``FETCH_THREADS``): a download no slower than the restore's own."""
    store = open_store(repo, env)
    keys = sorted(o.key for o in store.list("clusters/bench/chains/") if "/segments/" in o.key)

    def read(key: str) -> int:
        return sum(len(chunk) for chunk in store.get_stream(key))

    started = time.monotonic()
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        size = sum(pool.map(read, keys))
    return time.monotonic() - started, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--mix", choices=sorted(MIXES), default="kube",
                        help="the events: kube (lease renewals, Events with leases, pod updates, deletes) or "
                        "creates (every put a new ~1 KiB key: the most rows to write)")
    parser.add_argument("--revisions-per-segment", type=int, default=REVISIONS_PER_SEGMENT,
                        help="revisions in each segment of the chain (default %(default)s; 100: a cluster "
                        "writing 100 revisions a second, one segment a second)")
    parser.add_argument("--packed", action="store_true",
                        help="pack the chain with 'lifeboat pack' (timed once, at set-up) before the restores")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", choices=("s3", "dir"), default="s3")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--setup-only", action="store_true", help="write the base and the chain, time nothing")
    parser.add_argument("--end-state", action="store_true",
                        help="also restore a full backup of the point's state (taken once, then cached)")
    parser.add_argument("--rev", default="HEAD", help="the commit whose lifeboat restores (default HEAD)")
    parser.add_argument("--work", type=work_dir, default=BENCH_WORK / "pitr",
                        help="work dir: the cached base and chain, the node (default bench-work/pitr; "
                        "another one lets two runs not clash, and sets the chain up there once)")
    parser.add_argument("--json", type=Path,
                        help="where the results go (default bench_pitr.json, or bench_pitr_creates.json for "
                        "--mix creates, in bench-work, or in --work when given)")
    args = parser.parse_args()
    db = make_snapshot(args.size_mib << 20, BENCH_WORK / f"kube-like-{args.size_mib}MiB.db", style="kube")
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    if args.json is None:
        name = "bench_pitr.json" if args.mix == "kube" else f"bench_pitr_{args.mix}.json"
        args.json = results_dir(work, BENCH_WORK / "pitr") / name
    env = frozen_source(args.rev)
    if args.store == "dir":
        run(work, str(work / f"repo-{chain_name(args)}"), env, db, args)
        return
    with SeaweedServer(weed(), work / f"seaweed-{chain_name(args)}") as seaweed:
        s3 = seaweed.s3()
        env.update(s3.env())
        os.environ.update(s3.env())
        run(work, f"s3://{s3.bucket}/pitr", env, db, args)


def chain_name(args: argparse.Namespace) -> str:
    """The cached repository's name in the work dir: one per event mix and count."""
    name = str(args.events) if args.mix == "kube" else f"{args.mix}-{args.events}"
    per_segment: int = args.revisions_per_segment
    name = name if per_segment == REVISIONS_PER_SEGMENT else f"{name}-per-{per_segment}"
    return f"{name}-packed" if args.packed else name


def run(work: Path, repo_url: str, env: dict[str, str], db: Path, args: argparse.Namespace) -> None:
    repo = BackupRepository.open(open_store(repo_url, env), create=True)
    manifests = list(repo.manifests("bench"))
    if not manifests:
        manifest = take_backup(db, work, env, repo_url)
        started = time.monotonic()
        last = write_chain(repo, manifest, db, args.events, args.mix, args.revisions_per_segment)
        print(f"wrote {args.events} events up to revision {last} in {time.monotonic() - started:.0f} s",
              file=sys.stderr)
    base_id = (manifests[0].id if manifests else str(manifest["id"]))
    packed = work / f"pack-{chain_name(args)}.json"
    if args.packed and not packed.exists():  # once: a copy of the unpacked repository may be given
        pack_chain(repo_url, env, packed)
    if args.setup_only:
        return
    chain = ChainStore(repo.store).chains("bench")[-1]
    last = chain.segments[-1].last_revision
    results: dict[str, list[float]] = {"pitr": [], "base": [], "download": [], "replay": []}
    pki = make_pki(work / "pki")
    etcd = demo_member("bench", work / "node/var/lib/etcd", work / "etcd.log", pki)
    etcd.initial_cluster = f"bench={etcd.peer_url}"
    apiserver = ReservedPort()  # held while the fake kube-apiserver stops and starts with each restore
    apiserver_port = apiserver.port
    shutil.rmtree(work / "node", ignore_errors=True)
    root = make_node(work / "node", pki, etcd, apiserver_port)
    kubelet = DemoKubelet(root, etcd, apiserver_port)
    cases = ["pitr", "base"]
    if args.end_state:
        cases.append("end")
        results["end"] = []
    for case in cases:
        results.update({f"{case}_{part}": [] for part in ("fetch", "cpu", "sys", "rss_mb", "stolen")})
    loads = []
    try:
        kubelet.up()
        wait_answers(etcd, pki)
        end_repo, end_id = (end_state_backup(root, repo_url, env, last, etcd.data_dir) if args.end_state
                            else (repo_url, ""))
        read_once(repo, base_id)  # every case reads the base: none is the first to read it from disk
        if args.end_state:
            read_once(BackupRepository.open(open_store(end_repo, env)), end_id)
        for round_ in range(args.rounds):
            loads.append(os.getloadavg()[0])
            seconds, size = download_seconds(repo_url, env)
            results["download"].append(seconds)
            # Each restore starts on a settled machine (no compaction nor writeback of the one
            # before), and the order is reversed every round.
            for case in cases if round_ % 2 == 0 else cases[::-1]:
                waited = settle(etcd.data_dir)
                print(f"{case}: settled in {waited:.1f} s", file=sys.stderr)
                stolen = stolen_s()
                if case == "pitr":
                    total, steps, measured = timed_restore(root, repo_url, env, "--to-revision", str(last))
                    results["replay"].append(step_seconds(steps, total, "replay"))
                elif case == "end":
                    total, steps, measured = timed_restore(root, end_repo, env, end_id)
                else:
                    total, steps, measured = timed_restore(root, repo_url, env, base_id)
                results[case].append(total)
                results[f"{case}_fetch"].append(step_seconds(steps, total, "fetch"))
                results[f"{case}_cpu"].append(measured.cpu_s)
                results[f"{case}_sys"].append(measured.sys_s)
                results[f"{case}_rss_mb"].append(measured.own_peak_bytes / 2**20)
                results[f"{case}_stolen"].append(stolen_s() - stolen)
                remove_moved(etcd.data_dir)
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in results.items())
                  + f" (load {loads[-1]:.1f})", file=sys.stderr)
    finally:
        kubelet.down()
    report(results, args.events, size, db, loads, args.json, args.mix)


def remove_moved(data_dir: Path) -> None:
    """Remove the data dirs the restores moved aside (the benchmark's own node only)."""
    for moved in data_dir.parent.glob("etcd.lifeboat-moved-*"):
        shutil.rmtree(moved)


def end_state_backup(root: Path, repo_url: str, env: dict[str, str], last: int, data_dir: Path) -> tuple[str, str]:
    """The repository beside ``repo_url`` holding a full backup of the chain's state at ``last``,
    and that backup's id: taken the first time (a point restore to ``last``, untimed, then
    ``lifeboat backup`` of the member it started), found there later."""
    end_repo = repo_url.rstrip("/") + "-end"
    repo = BackupRepository.open(open_store(end_repo, env), create=True)
    found = list(repo.manifests("bench"))
    if found:
        return end_repo, found[0].id
    started = time.monotonic()
    timed_restore(root, repo_url, env, "--to-revision", str(last))
    remove_moved(data_dir)
    out = subprocess.run([*LIFEBOAT, "backup", "--root", str(root), "--no-files", "--repo", end_repo,
                          "--cluster", "bench", "-o", "json"], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"lifeboat backup of the end state failed: {out.stderr.strip()[-2000:]}")
    manifest = json.loads(out.stdout)
    print(f"backed up the state at revision {last} as {manifest['id']} in {time.monotonic() - started:.0f} s",
          file=sys.stderr)
    return end_repo, str(manifest["id"])


def report(results: dict[str, list[float]], events: int, segment_bytes: int, db: Path, loads: list[float],
           out: Path, mix: str) -> None:
    med = {name: statistics.median(runs) for name, runs in results.items()}
    ratios = [p / (b + d) for p, b, d in zip(results["pitr"], results["base"], results["download"])]
    summary: dict[str, object] = {
        "events": events, "mix": mix, "base_db_bytes": db.stat().st_size, "segment_bytes": segment_bytes,
        "median_s": med, "runs_s": results, "ratio_per_round": ratios, "ratio_median": statistics.median(ratios),
        "apply_events_per_s": events / med["replay"], "load_average": loads, "memory": memory_reporting(),
    }
    if "end" in results:
        against_end = [p / (e + d) for p, e, d in zip(results["pitr"], results["end"], results["download"])]
        end_ratios = [e / (b + d) for e, b, d in zip(results["end"], results["base"], results["download"])]
        summary.update(pitr_over_end_per_round=against_end, pitr_over_end_median=statistics.median(against_end),
                       end_over_base_per_round=end_ratios, end_over_base_median=statistics.median(end_ratios))
    out.write_text(json.dumps(summary, indent=2))
    print(f"base db {db.stat().st_size / 1e6:.0f} MB, {events:,} events ({mix}) in {segment_bytes / 1e6:.0f} MB of "
          f"segments, {len(ratios)} rounds, load average {min(loads):.1f}-{max(loads):.1f}; "
          f"freed memory: {memory_reporting()}\n")
    print("| case | median | runs |\n| --- | --- | --- |")
    names = {"pitr": "`lifeboat restore --to-revision LAST` (base + events)", "base": "`lifeboat restore BASE`",
             "download": "download of the segments", "replay": "its replay-capture step",
             "pitr_cpu": "CPU seconds of the base + events restore", "base_cpu": "CPU seconds of the base restore",
             "pitr_rss_mb": "peak RSS (MB) of the base + events restore", "base_rss_mb": "peak RSS (MB) of the base restore",
             "end": "`lifeboat restore END` (a full backup of the point's state)",
             "end_cpu": "CPU seconds of the end state's restore", "end_rss_mb": "peak RSS (MB) of the end state's restore",
             "pitr_stolen": "CPU seconds the host took during the base + events restore (steal)",
             "base_stolen": "CPU seconds the host took during the base restore (steal)",
             "end_stolen": "CPU seconds the host took during the end state's restore (steal)",
             "pitr_fetch": "its fetch step (the base; the segments' survey beside it)",
             "base_fetch": "the base restore's fetch step", "end_fetch": "the end state's fetch step",
             "pitr_sys": "of its CPU, system seconds (page faults, page cache, I/O)",
             "base_sys": "of the base restore's CPU, system seconds",
             "end_sys": "of the end state's CPU, system seconds"}
    for key, name in names.items():
        if key in results:
            print(f"| {name} | {med[key]:.2f} | {', '.join(f'{r:.2f}' for r in results[key])} |")
    print(f"\nratio base+events / (base + download): {statistics.median(ratios):.2f}× "
          f"(per round {', '.join(f'{r:.2f}' for r in ratios)}); apply {events / med['replay']:,.0f} events/s")
    if "end" in results:
        for text, key in (("base+events / (end state + download)", "pitr_over_end"),
                          ("end state / (base + download)", "end_over_base")):
            per_round = summary[f"{key}_per_round"]
            assert isinstance(per_round, list)
            print(f"ratio {text}: {summary[f'{key}_median']:.2f}× (per round {', '.join(f'{r:.2f}' for r in per_round)})")


if __name__ == "__main__":
    on_termination()  # SIGTERM cleans up like Ctrl-C
    main()

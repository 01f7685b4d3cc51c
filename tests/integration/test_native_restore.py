"""lifeboat's own restore writer against etcd's restore tools and servers, 3.5.1 and 3.4.23."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from lifeboat.etcd import ConnectionSettings, EtcdClient, RevisionCompacted
from lifeboat.etcd.binaries import SnapshotRestore, probe_restore_tool
from lifeboat.restore.member_files import METADATA_RECORD, WAL_NAME, fields_of, new_cluster, read_wal_records
from lifeboat.restore.native import NativeRestore, commit_record
from lifeboat.snapshot import iter_latest
from lifeboat.snapshot.bbolt import BoltFile
from tests.support.binaries import EtcdRelease
from tests.support.etcd import EtcdCluster, EtcdMember, put_many

pytestmark = pytest.mark.integration

TOKEN = "restored-token"


@pytest.fixture(scope="module")
def saved_snapshot(release: EtcdRelease, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of a real one-member cluster with a few keys, one deleted, one rewritten;
    saved once per release (each test gets a copy of it)."""
    work = tmp_path_factory.mktemp(f"native-source-{release.version}")
    path = work / "snapshot.db"
    with EtcdCluster(release, work / "source") as source:
        member = source.first()
        put_many(member, [(f"/registry/k{i:02d}", f"value-{i}") for i in range(20)])
        member.etcdctl("del", "/registry/k03")
        member.etcdctl("put", "/registry/k04", "rewritten")
        subprocess.run([str(release.etcdctl), f"--endpoints={member.client_url}", "snapshot", "save", str(path)],
                       env=dict(os.environ, ETCDCTL_API="3"), check=True, capture_output=True)
    return path


@pytest.fixture
def snapshot(saved_snapshot: Path, tmp_path: Path) -> Path:
    """This test's own copy of :func:`saved_snapshot`."""
    return Path(shutil.copy(saved_snapshot, tmp_path / "snapshot.db"))


def tool(release: EtcdRelease) -> NativeRestore:
    return NativeRestore(probe_restore_tool(release.etcdutl or release.etcdctl))


def restore(snapshot: Path, member: EtcdMember, initial_cluster: str, *, native: NativeRestore | None,
            release: EtcdRelease, bump: int | None = None, in_place: bool = False) -> None:
    """Restore ``snapshot`` into ``member``'s data dir; ``in_place``: by committing into a copy of
    it beside the data dir (which moves into it), as ``lifeboat restore`` does."""
    if in_place:
        member.data_dir.parent.mkdir(parents=True, exist_ok=True)
        snapshot = Path(shutil.copy(snapshot, member.data_dir.parent / f"{member.name}-snapshot.db"))
    job = SnapshotRestore(snapshot, member.data_dir, member.name, initial_cluster, TOKEN, member.peer_url,
                          bump_revision=bump)
    if native is not None and in_place:
        native.run_in_place(job)
        assert not snapshot.exists() and commit_record(snapshot).is_file()
    elif native is not None:
        native.run(job)
    else:
        tool(release).reference.run(job)


def buckets(db: Path) -> dict[bytes, dict[bytes, bytes | None]]:
    with BoltFile.open(db) as bolt:
        return {name: {key: value for key, value, *_ in bolt.items(ref, bolt.new_seen())}
                for name, ref in list(bolt.top_level(bolt.new_seen()))}


def tree(data_dir: Path) -> dict[str, int]:
    """Every path under ``data_dir`` and its mode."""
    return {str(p.relative_to(data_dir)): stat.S_IMODE(p.stat().st_mode) for p in sorted(data_dir.rglob("*"))}


def wal_cluster_id(data_dir: Path) -> int:
    with (data_dir / "member" / "wal" / WAL_NAME).open("rb") as f:
        head = f.read(4096)
    metadata = next(r for r in read_wal_records(head) if r.kind == METADATA_RECORD)
    return int(dict(fields_of(metadata.data))[2])


def client(member: EtcdMember) -> EtcdClient:
    return EtcdClient(ConnectionSettings((member.client_url,)))


def test_native_data_dir_is_what_the_tool_writes(release: EtcdRelease, snapshot: Path, tmp_path: Path) -> None:
    members = [EtcdMember(release, f"m{i}", tmp_path / way) for i in range(3) for way in ("tool", "native")]
    by_tool, native = members[2], members[3]  # the same member (m1), restored both ways
    native.client_port, native.peer_port = by_tool.client_port, by_tool.peer_port
    initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in members[::2])
    restore(snapshot, by_tool, initial_cluster, native=None, release=release)
    restore(snapshot, native, initial_cluster, native=tool(release), release=release)

    assert tree(native.data_dir) == tree(by_tool.data_dir)
    for name in tree(by_tool.data_dir):
        if name.endswith((".wal", ".snap")):
            assert (native.data_dir / name).read_bytes() == (by_tool.data_dir / name).read_bytes(), name
    theirs, ours = buckets(by_tool.data_dir / "member/snap/db"), buckets(native.data_dir / "member/snap/db")
    if release.major_minor == "3.4":
        # etcdctl 3.4 leaves the old cluster's members in bucket 'members' (3.4 reads membership from
        # the v2 store); lifeboat writes the new cluster's, as 3.5 does.
        old = buckets(snapshot)[b"members"]
        assert theirs[b"members"] == old and ours[b"members"] != old
        made = new_cluster([(m.name, [m.peer_url]) for m in members[::2]], TOKEN)
        assert ours[b"members"] == {m.key: m.json() for m in made.members}
        del theirs[b"members"], ours[b"members"]
    assert ours == theirs


def test_a_data_dir_committed_into_the_snapshot_is_the_one_written_from_a_copy(
    release: EtcdRelease, snapshot: Path, tmp_path: Path
) -> None:
    copied, committed = (EtcdMember(release, "m0", tmp_path / way) for way in ("copied", "committed"))
    committed.client_port, committed.peer_port = copied.client_port, copied.peer_port
    initial_cluster = f"m0={copied.peer_url}"
    restore(snapshot, copied, initial_cluster, native=tool(release), release=release, bump=1000)
    restore(snapshot, committed, initial_cluster, native=tool(release), release=release, bump=1000, in_place=True)

    assert tree(committed.data_dir) == tree(copied.data_dir)
    for name in tree(copied.data_dir):
        if (copied.data_dir / name).is_file():  # the db too: the same pages, the same meta
            assert (committed.data_dir / name).read_bytes() == (copied.data_dir / name).read_bytes(), name


@pytest.mark.parametrize("in_place", [False, True], ids=["copied", "committed"])
def test_natively_restored_member_serves_every_key_at_the_bumped_revision_alone(
    release: EtcdRelease, snapshot: Path, tmp_path: Path, in_place: bool
) -> None:
    expected = {kv.key: kv for kv in iter_latest(snapshot)}
    member = EtcdMember(release, "restored", tmp_path / "native")
    reference = EtcdMember(release, "restored", tmp_path / "tool")
    reference.client_port, reference.peer_port = member.client_port, member.peer_port
    initial_cluster = f"restored={member.peer_url}"
    restore(snapshot, member, initial_cluster, native=tool(release), release=release, bump=1000, in_place=in_place)
    restore(snapshot, reference, initial_cluster, native=None, release=release)
    revision = max(kv.mod_revision for kv in expected.values())
    member.start(initial_cluster, TOKEN)
    try:
        member.wait_healthy()
        with client(member) as c:
            served = {kv.key: kv for kv in c.range_all(b"", prefix=True)}
            assert served == expected
            assert c.range(b"\0", limit=1).revision == revision + 1000
            listed = c.member_list()
            assert [(m.name, tuple(m.peer_urls)) for m in listed.members] == [("restored", (member.peer_url,))]
            assert listed.cluster_id == wal_cluster_id(reference.data_dir)  # etcd's id for the same flags
            with pytest.raises(RevisionCompacted):
                with c.watch(b"/registry/", prefix=True, start_revision=revision) as stream:
                    stream.next_event(timeout=10)
    finally:
        member.stop()


def test_members_restored_by_lifeboat_and_by_the_tool_form_one_cluster(
    release: EtcdRelease, snapshot: Path, tmp_path: Path
) -> None:
    expected = {kv.key: kv.value for kv in iter_latest(snapshot)}
    cluster = EtcdCluster(release, tmp_path / "mixed", size=3, token=TOKEN)
    for member in cluster.members:
        restore(snapshot, member, cluster.initial_cluster, release=release,  # m2 as lifeboat restore writes it
                native=None if member.name == "m0" else tool(release), in_place=member.name == "m2")
    try:
        for member in cluster.members:
            member.start(cluster.initial_cluster, TOKEN)
        for member in cluster.members:
            member.wait_healthy(timeout=60)
        ids = set()
        for member in cluster.members:
            with client(member) as c:
                listed = c.member_list()
                ids.add(listed.cluster_id)
                assert sorted((m.name, tuple(m.peer_urls)) for m in listed.members) == [
                    (m.name, (m.peer_url,)) for m in cluster.members]
                assert {kv.key: kv.value for kv in c.range_all(b"", prefix=True)} == expected
        assert len(ids) == 1
        with client(cluster.members[0]) as c:
            c.put(b"/registry/after-restore", b"written through the tool's member")
        with client(cluster.members[2]) as c:
            assert c.get(b"/registry/after-restore") is not None  # replicated: one raft group
    finally:
        cluster.stop()

"""The restore planner, target validation, journal and executor, with in-memory doubles."""

from __future__ import annotations

import errno
import json
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import pytest

from lifeboat.catalog.manifest import BackupStatus, Manifest
from lifeboat.catalog.timeline import build_timeline, point_at_revision
from lifeboat.errors import EtcdUnavailable, IntegrityError, NoRoom, OperationFailed, UsageError
from lifeboat.etcd import KeyValue
from lifeboat.etcd.binaries import RestoreTool, SnapshotRestore
from lifeboat.restore.cluster_plan import plan_cluster_restore
from lifeboat.restore.content import save_sample
from lifeboat.restore.executor import execute
from lifeboat.restore.journal import Journal, journal_path, load_journal, save_journal
from lifeboat.etcd.data_dir import WAL_SEGMENT_BYTES
from lifeboat.restore.native import NativeRestore
from lifeboat.restore.plan import RestoreInputs, RestorePlan, plan_restore, plan_rollback
from lifeboat.restore.steps import (
    BumpRevision,
    DropSnapshot,
    RestoreContext,
    RestoreData,
    ReplayCapture,
    RestorePaths,
    Step,
    VerifyMember,
)
from lifeboat.restore.supervisor import ManualSupervisor, MemorySupervisor, NodeLiveness
from lifeboat.restore.target import make_target, parse_initial_cluster
from tests.support.manifests import SOURCE, snapshot_info, stored_object
from tests.unit.catalog.capture_records import chain, ref


@dataclass
class FakeTool:
    can_bump_revision: bool = False
    copies_key_pages: bool = False
    version: str = "3.5.1"

    def describe(self) -> str:
        return f"etcdutl {self.version}"

    def check_compatible(self, snapshot_version: str) -> None:
        if snapshot_version.split(".")[0] != self.version.split(".")[0]:
            raise UsageError("wrong major version")

    def run(self, restore: SnapshotRestore) -> None:
        raise AssertionError("not run in planner tests")


def manifest(revision: int = 42, files: int = 0) -> Manifest:
    return Manifest(
        id="20240101T000000Z-abcdef", cluster="prod", status=BackupStatus.COMPLETE,
        started_at="2024-01-01T00:00:00Z", finished_at="2024-01-01T00:00:09Z",
        tool_version="0", source=SOURCE, snapshot=snapshot_info(revision, total_size=4096),
        compression="zstd:3", encryption=None, recipients=(), objects=(stored_object(),),
    )


def target(tmp_path: Path, cluster: str = "m0=https://10.0.0.1:2380") -> object:
    return make_target(name="m0", initial_cluster=cluster, token="tok", peer_urls=None,
                       data_dir=tmp_path / "etcd", discovered=None)


def plan_for(tmp_path: Path, **changes: object) -> RestorePlan:
    inputs = RestoreInputs(manifest(), target(tmp_path), MemorySupervisor(), FakeTool(),  # type: ignore[arg-type]
                           "20240102T030405Z")
    return plan_restore(replace(inputs, **changes))  # type: ignore[arg-type]


def test_plan_reads_and_verifies_before_it_stops_or_moves_anything(tmp_path: Path) -> None:
    keys = [s.key for s in plan_for(tmp_path).steps]
    assert keys == ["preflight", "fetch-snapshot", "stop:kube-apiserver", "stop:etcd",
                    "move-aside", "restore-data", "drop-snapshot", "bump-revision", "put-in-place", "start:etcd",
                    "verify-member", "start:kube-apiserver", "clean-up"]


def test_lifeboats_own_writer_needs_room_for_one_copy_of_the_snapshot_beside_the_data_dir(tmp_path: Path) -> None:
    native = NativeRestore(RestoreTool(Path("/usr/bin/etcdutl"), "etcdutl", "3.5.1", False, False))
    size, wal = manifest().snapshot.total_size, WAL_SEGMENT_BYTES
    assert plan_for(tmp_path, tool=native).steps[0].need_bytes == size + wal  # type: ignore[attr-defined]
    assert "drop-snapshot" not in [s.key for s in plan_for(tmp_path, tool=native).steps]  # it became the db
    assert plan_for(tmp_path, tool=FakeTool(can_bump_revision=True)).steps[0].need_bytes == 2 * size + wal  # type: ignore[attr-defined]


def test_a_point_restore_needs_room_up_front_for_the_segments_its_replay_stages_too(tmp_path: Path) -> None:
    native = NativeRestore(RestoreTool(Path("/usr/bin/etcdutl"), "etcdutl", "3.5.1", False, False))
    base = manifest(revision=100)
    segments = [replace(ref(101, 150, 1, 2), size=3 << 20), replace(ref(151, 200, 3, 4), size=5 << 20)]
    point = point_at_revision(build_timeline("prod", [base], [chain(base, segments)]), 180)
    size, wal = base.snapshot.total_size, WAL_SEGMENT_BYTES
    plan = plan_for(tmp_path, manifest=base, tool=native, point=point)
    assert plan.steps[0].need_bytes == size + wal + (8 << 20)  # type: ignore[attr-defined]
    replay = next(s for s in plan.steps if isinstance(s, ReplayCapture))
    assert replay.copies_after == 0  # committed into the snapshot, which becomes the restored db
    with_tool = plan_for(tmp_path, manifest=base, tool=FakeTool(can_bump_revision=True), point=point)
    assert next(s for s in with_tool.steps if isinstance(s, ReplayCapture)).copies_after == 1
    at_base = plan_for(tmp_path, manifest=base, tool=native, point=point_at_revision(
        build_timeline("prod", [base], [chain(base, segments)]), 100))
    assert at_base.steps[0].need_bytes == size + wal  # type: ignore[attr-defined]  # nothing replayed or staged


def test_plan_moves_the_old_data_dir_to_a_stamped_sibling(tmp_path: Path) -> None:
    plan = plan_for(tmp_path)
    assert plan.paths.moved_aside == tmp_path / "etcd.lifeboat-moved-20240102T030405Z"
    assert any(str(plan.paths.moved_aside) in s.describe() for s in plan.steps)


def test_no_start_stops_once_the_restored_data_is_in_place_and_says_how_to_start(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, start=False)
    started = {"start:etcd", "verify-member", "start:kube-apiserver"}
    assert [s.key for s in plan.steps] == [s.key for s in plan_for(tmp_path).steps if s.key not in started]
    assert plan.steps[-1].key == "clean-up" and "put-in-place" in [s.key for s in plan.steps]
    assert plan.next_steps[0] == "start etcd: start etcd by hand"
    assert plan.next_steps[1].startswith("once etcd is healthy, start kube-apiserver")
    assert "lifeboat status" in plan.next_steps[2]


def test_no_start_rollback_puts_the_old_data_back_and_leaves_etcd_stopped(tmp_path: Path) -> None:
    journal = Journal(backup_id="b", cluster="c", data_dir=str(tmp_path / "etcd"), name="m0",
                      initial_cluster="m0=https://10.0.0.1:2380,m1=https://10.0.0.2:2380", token="t",
                      stamp="20240102T030405Z", state={"moved_aside": str(tmp_path / "etcd.moved")})
    paths = plan_for(tmp_path).paths
    started = plan_rollback(journal, paths, MemorySupervisor(), "20240103T000000Z")
    stopped = plan_rollback(journal, paths, MemorySupervisor(), "20240103T000000Z", start=False)
    assert [s.key for s in started.steps][-3:] == ["start:etcd", "start:kube-apiserver", "clean-up"]
    assert [s.key for s in stopped.steps] == ["check-old-data", "stop:kube-apiserver", "stop:etcd",
                                              "set-restored-aside", "put-back", "clean-up"]
    assert "once all are restored" in stopped.next_steps[0]


def test_tool_without_bump_revision_gets_lifeboats_bump_on_the_restored_db(tmp_path: Path) -> None:
    plan = plan_for(tmp_path)
    steps = {s.key: s for s in plan.steps}
    bump = steps["bump-revision"]
    assert isinstance(bump, BumpRevision)
    assert (bump.db, bump.amount, bump.revision) == (
        plan.paths.staging / "member/snap/db", 1_000_000_000, 42)
    restore = steps["restore-data"]
    assert isinstance(restore, RestoreData)
    assert restore.snapshot == plan.paths.snapshot and restore.bump_revision is None
    verify = steps["verify-member"]
    assert isinstance(verify, VerifyMember)
    assert (verify.revision, verify.compacted_before) == (42 + 1_000_000_000, 42)
    assert plan.bump is not None and plan.bump.by == "lifeboat"
    assert "by lifeboat, natively, on the restored db" in plan.lines()[1]
    assert plan.to_dict()["revision_bump"] == {"amount": 1_000_000_000, "by": "lifeboat", "tool": "etcdutl 3.5.1"}
    assert not plan.notes


def test_tool_with_bump_revision_bumps_and_expects_the_higher_revision(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, tool=FakeTool(can_bump_revision=True))
    described = " ".join(s.describe() for s in plan.steps)
    assert "--bump-revision 1000000000 --mark-compacted" in described
    assert f"at least {42 + 1_000_000_000}" in described
    assert "a watch from revision 42 is refused as compacted" in described
    assert "bump-revision" not in [s.key for s in plan.steps]
    assert plan.bump is not None and plan.bump.by == "tool"
    assert not plan.notes


def test_an_explicit_bump_with_an_old_tool_is_done_by_lifeboat(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, bump_revision=5)
    bump = next(s for s in plan.steps if isinstance(s, BumpRevision))
    assert bump.amount == 5
    assert f"at least {42 + 5}" in " ".join(s.describe() for s in plan.steps)


def test_bump_zero_restores_the_snapshots_revision_and_says_so(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, bump_revision=0)
    keys = [s.key for s in plan.steps]
    assert "bump-revision" not in keys
    verify = next(s for s in plan.steps if isinstance(s, VerifyMember))
    assert (verify.revision, verify.compacted_before) == (42, None)
    assert not any("--bump-revision" in s.describe() for s in plan.steps)
    assert any("--bump-revision 0" in n for n in plan.notes)
    assert plan.to_dict()["revision_bump"]["by"] is None


def test_a_negative_bump_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--bump-revision"):
        plan_for(tmp_path, bump_revision=-1)


def test_a_bump_past_etcds_largest_revision_is_refused_before_any_step_runs(tmp_path: Path) -> None:
    # The bump step itself would refuse too, but only after the old data dir was moved aside.
    largest = (1 << 63) - 1
    with pytest.raises(UsageError, match="--bump-revision .* past etcd's largest revision"):
        plan_for(tmp_path, bump_revision=largest - 41)
    assert plan_for(tmp_path, bump_revision=largest - 42)


def test_files_add_fetch_and_restore_steps_only_when_the_backup_has_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no control-plane files"):
        plan_for(tmp_path, files=True)


def test_supervisor_without_apiserver_leaves_it_to_the_operator(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, supervisor=MemorySupervisor(managed=frozenset({"etcd"})))
    assert "stop:kube-apiserver" not in [s.key for s in plan.steps]
    assert any("kube-apiserver is not managed" in n for n in plan.notes)


def test_initial_cluster_without_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no member named 'm0'"):
        target(tmp_path, "m1=https://10.0.0.2:2380")


def test_peer_urls_must_match_initial_cluster(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="differs from what --initial-cluster lists"):
        make_target(name="m0", initial_cluster="m0=https://10.0.0.1:2380", token=None,
                    peer_urls="https://10.0.0.9:2380", data_dir=tmp_path / "etcd", discovered=None)


def test_missing_flags_without_a_static_pod_are_named(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--initial-cluster, --data-dir"):
        make_target(name="m0", initial_cluster=None, token=None, peer_urls=None, data_dir=None, discovered=None)


def test_malformed_initial_cluster_entry_is_refused() -> None:
    with pytest.raises(UsageError, match="not NAME=PEER_URL"):
        parse_initial_cluster("m0=https://a:2380,oops")
    with pytest.raises(UsageError, match="not a peer URL"):
        parse_initial_cluster("m0=a:2380")


@pytest.mark.parametrize("text", ["m1=http://a:1,m2=http://a:1", "m1=http://a:1,m1=http://a:1"])
def test_a_peer_url_listed_twice_is_refused_as_etcd_would_refuse_it(text: str) -> None:
    """restore plan printed a command for every member of such a cluster; etcd then refused to start."""
    with pytest.raises(UsageError, match="lists peer URL http://a:1 twice"):
        parse_initial_cluster(text)


def test_a_peer_url_etcd_would_refuse_is_refused_before_the_restore_starts() -> None:
    with pytest.raises(UsageError, match="not a peer URL"):  # etcd: "URL must not contain a path"
        parse_initial_cluster("m0=https://10.0.0.1:2380/etcd")


def test_cluster_plan_gives_every_member_the_same_cluster_and_token() -> None:
    plan = plan_cluster_restore("ID", "a=https://1.1.1.1:2380,b=https://1.1.1.2:2380", "tok", ["--repo=x"])
    assert [m.name for m in plan.members] == ["a", "b"]
    for m in plan.members:
        assert "--initial-cluster=a=https://1.1.1.1:2380,b=https://1.1.1.2:2380" in m.argv
        assert "--initial-cluster-token=tok" in m.argv and m.argv[:4] == ("lifeboat", "restore", "ID", "--repo=x")
    assert "--initial-advertise-peer-urls=https://1.1.1.2:2380" in plan.members[1].argv


def test_journal_round_trips_and_damage_is_an_error(tmp_path: Path) -> None:
    path = journal_path(tmp_path / "etcd")
    journal = Journal("id", "c", "/d", "m0", "m0=u", "tok", "stamp").with_done("a").with_path("moved_aside", "/x")
    save_journal(path, journal)
    assert load_journal(path) == journal
    path.write_text("{not json")
    with pytest.raises(UsageError, match="unreadable"):
        load_journal(path)


@pytest.mark.parametrize(("change", "named"), [
    ({"done": "preflight"}, "done"),
    ({"state": {"moved_aside": 7}}, "state.moved_aside"),
    ({"state": {"moved_asid": "/x"}}, "state.moved_asid"),
    ({"finished": "yes"}, "finished"),
    ({"format": 2}, "format"),
    ({"surprise": 1}, "surprise"),
])
def test_a_journal_with_a_wrong_type_or_unknown_key_is_refused_naming_it(
    tmp_path: Path, change: dict[str, object], named: str,
) -> None:
    path = journal_path(tmp_path / "etcd")
    save_journal(path, Journal("id", "c", "/d", "m0", "m0=u", "tok", "stamp"))
    raw = json.loads(path.read_bytes())
    path.write_text(json.dumps({**raw, **change}))
    with pytest.raises(UsageError, match=f"not one this lifeboat wrote \\({re.escape(named)}"):
        load_journal(path)


def test_a_journal_of_a_point_restore_keeps_its_point_and_asks_for_it_to_resume(tmp_path: Path) -> None:
    # Its fetched snapshot is replayed in place: resumed as a restore of the plain backup (or of
    # another point), the replayed db was restored after the old data dir was moved aside.
    path = journal_path(tmp_path / "etcd")
    save_journal(path, Journal("id", "c", "/d", "m0", "m0=u", "tok", "stamp", point_revision=9000))
    loaded = load_journal(path)
    assert loaded is not None and loaded.point_revision == 9000
    assert "re-run with id --to-revision 9000 to resume it" in loaded.resume_hint(path)
    assert "re-run with id to resume" in Journal("id", "c", "/d", "m0", "m0=u", "tok", "stamp").resume_hint(path)


def test_a_journal_from_before_node_changed_was_recorded_counts_as_having_changed_the_node(tmp_path: Path) -> None:
    path = journal_path(tmp_path / "etcd")
    save_journal(path, Journal("id", "c", "/d", "m0", "m0=u", "tok", "stamp"))
    raw = json.loads(path.read_bytes())
    del raw["node_changed"], raw["rollback_done"]
    path.write_text(json.dumps(raw))
    loaded = load_journal(path)
    assert loaded is not None and loaded.node_changed and loaded.rollback_done == ()


@dataclass(frozen=True)
class Recorded(Step):
    log: list[str] = field(default_factory=list)
    fail: bool = False

    def describe(self) -> str:
        return self.key

    def run(self, ctx: RestoreContext) -> None:
        self.log.append(self.key)
        if self.fail:
            raise OperationFailed(f"{self.key} failed")


class NoMember:
    def revision(self) -> int:
        raise EtcdUnavailable("down")

    def get(self, key: bytes) -> KeyValue | None:
        return None

    def get_many(self, keys: Sequence[bytes]) -> list[KeyValue | None]:
        return [None for _ in keys]

    def watch_refused_as_compacted(self, revision: int) -> bool:
        raise EtcdUnavailable("down")


def context(tmp_path: Path, journal: Journal) -> tuple[RestoreContext, list[Journal]]:
    saved: list[Journal] = []
    ctx = RestoreContext(target=target(tmp_path), paths=plan_for(tmp_path).paths,  # type: ignore[arg-type]
                         supervisor=MemorySupervisor(), member=NoMember(), root=tmp_path, journal=journal,
                         save=saved.append)
    return ctx, saved


def test_rerun_after_a_crash_skips_the_steps_the_journal_lists(tmp_path: Path) -> None:
    log: list[str] = []
    steps = tuple(Recorded(k, log=log) for k in ("a", "b", "c"))
    plan = RestorePlan("t", plan_for(tmp_path).paths, steps, (), ())
    journal = Journal("id", "c", "/d", "m0", "m0=u", "tok", "stamp", done=("a", "b"))
    ctx, saved = context(tmp_path, journal)
    outcome = execute(plan, ctx, auto_rollback=False)
    assert log == ["c"] and outcome.skipped == ("a", "b") and outcome.ran == ("c",)
    assert saved[-1].finished and saved[-1].done == ("a", "b", "c")


def test_a_failing_step_is_not_journaled_as_done(tmp_path: Path) -> None:
    log: list[str] = []
    plan = RestorePlan("t", plan_for(tmp_path).paths, (Recorded("a", log=log), Recorded("b", log=log, fail=True)),
                       (), ())
    ctx, saved = context(tmp_path, Journal("id", "c", "/d", "m0", "m0=u", "tok", "stamp"))
    with pytest.raises(OperationFailed, match="b failed"):
        execute(plan, ctx, auto_rollback=False)
    assert saved[-1].done == ("a",) and not saved[-1].finished


def test_failed_start_rolls_back_to_the_old_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "etcd"
    (data_dir / "member").mkdir(parents=True)
    moved = tmp_path / "etcd.lifeboat-moved-20240102T030405Z"
    (moved / "member").mkdir(parents=True)
    (moved / "member" / "old").write_text("old data")
    log: list[str] = []
    plan = RestorePlan("t", plan_for(tmp_path).paths,
                       (Recorded("start:etcd", log=log, fail=True, undo_on_failure=True),), (), ())
    journal = Journal("id", "c", str(data_dir), "m0", "m0=u", "tok", "20240102T030405Z",
                      state={"moved_aside": str(moved)})
    ctx, _saved = context(tmp_path, journal)
    with pytest.raises(OperationFailed, match="rolled back"):
        execute(plan, ctx, auto_rollback=True)
    assert (data_dir / "member" / "old").read_text() == "old data"
    assert (tmp_path / "etcd.lifeboat-restored-20240102T030405Z" / "member").is_dir()
    assert isinstance(ctx.supervisor, MemorySupervisor)
    assert ctx.supervisor.calls[-2:] == ["start etcd", "start kube-apiserver"]


@dataclass(frozen=True)
class ReadOnly(Recorded):
    changes_node: ClassVar[bool] = False


def test_restore_that_failed_before_changing_the_node_leaves_a_journal_that_blocks_nothing(
        tmp_path: Path) -> None:
    log: list[str] = []
    plan = RestorePlan("t", plan_for(tmp_path).paths,
                       (ReadOnly("preflight", log=log), ReadOnly("fetch-snapshot", log=log, fail=True),
                        Recorded("stop:etcd", log=log)), (), ())
    ctx, saved = context(tmp_path, Journal("id", "c", "/d", "m0", "m0=u", "tok", "stamp"))
    with pytest.raises(OperationFailed):
        execute(plan, ctx, auto_rollback=False)
    assert log == ["preflight", "fetch-snapshot"]
    assert not saved[-1].node_changed and not saved[-1].unfinished


def test_journal_says_the_node_changed_before_the_first_step_that_changes_it_runs(tmp_path: Path) -> None:
    seen: list[bool] = []

    @dataclass(frozen=True)
    class Stopping(Recorded):
        def run(self, ctx: RestoreContext) -> None:
            seen.append(saved[-1].node_changed)
            raise KeyboardInterrupt  # killed while stopping etcd

    plan = RestorePlan("t", plan_for(tmp_path).paths, (ReadOnly("preflight"), Stopping("stop:etcd")), (), ())
    ctx, saved = context(tmp_path, Journal("id", "c", "/d", "m0", "m0=u", "tok", "stamp"))
    with pytest.raises(KeyboardInterrupt):
        execute(plan, ctx, auto_rollback=False)
    assert seen == [True] and saved[-1].unfinished


def test_journal_written_before_node_changed_existed_still_blocks(tmp_path: Path) -> None:
    path = journal_path(tmp_path / "etcd")
    save_journal(path, Journal("id", "c", "/d", "m0", "m0=u", "tok", "stamp", done=("preflight",)))
    raw = json.loads(path.read_text())
    del raw["node_changed"]
    path.write_text(json.dumps(raw))
    loaded = load_journal(path)
    assert loaded is not None and loaded.unfinished


def test_rollback_of_a_restore_that_stopped_etcd_but_moved_nothing_starts_it_again(tmp_path: Path) -> None:
    data_dir = tmp_path / "etcd"
    (data_dir / "member").mkdir(parents=True)
    journal = Journal("id", "c", str(data_dir), "m0", "m0=u", "tok", "20240102T030405Z",
                      done=("preflight", "fetch-snapshot", "stop:kube-apiserver"), node_changed=True)
    supervisor = MemorySupervisor()
    plan = plan_rollback(journal, RestorePaths(data_dir, journal.stamp), supervisor, "20240102T040000Z")
    assert [s.key for s in plan.steps] == ["put-back", "start:etcd", "start:kube-apiserver", "clean-up"]
    # Nothing was moved aside: the plan does not say it renames something back.
    assert "if a crash in the middle of the move left it" in plan.steps[0].describe()
    ctx, saved = context(tmp_path, journal)
    ctx.supervisor = supervisor
    execute(plan, ctx, auto_rollback=False)
    assert supervisor.calls == ["start etcd", "start kube-apiserver"] and saved[-1].rolled_back
    assert (data_dir / "member").is_dir()


class ServingMember(NoMember):
    """A started member at ``served`` holding ``keys``; it refuses watches from before ``served``."""

    def __init__(self, served: int, keys: dict[bytes, KeyValue]) -> None:
        self.served, self.keys = served, keys

    def revision(self) -> int:
        return self.served

    def get_many(self, keys: Sequence[bytes]) -> list[KeyValue | None]:
        return [self.keys.get(key) for key in keys]

    def watch_refused_as_compacted(self, revision: int) -> bool:
        return revision < self.served


def test_the_snapshot_goes_before_the_member_is_checked_against_the_keys_kept_from_it(tmp_path: Path) -> None:
    plan = plan_for(tmp_path)
    steps = {s.key: s for s in plan.steps}
    drop, verify = steps["drop-snapshot"], steps["verify-member"]
    assert isinstance(drop, DropSnapshot) and isinstance(verify, VerifyMember)
    plan.paths.work.mkdir()
    plan.paths.snapshot.write_bytes(b"the fetched snapshot")
    kept = KeyValue(key=b"/registry/a", value=b"v", create_revision=2, mod_revision=5, version=3)
    save_sample(verify.sample, [kept])
    ctx, _ = context(tmp_path, Journal("id", "c", "/d", "m0", "m0=u", "tok", "stamp"))
    drop.run(ctx)
    ctx.removed()
    assert not plan.paths.snapshot.exists() and verify.sample.exists()

    ctx.member = ServingMember(verify.revision, {kept.key: kept})
    said: list[str] = []
    ctx.say = said.append
    verify.run(ctx)  # the snapshot is gone: the kept keys are what is checked
    assert said == [f"member serves revision {verify.revision}; a watch from revision 42 is refused as "
                    "compacted; 1 sampled keys match the snapshot"]
    ctx.member = ServingMember(verify.revision, {kept.key: replace(kept, value=b"other")})
    with pytest.raises(IntegrityError, match="key b'/registry/a' differs"):
        verify.run(ctx)


def test_a_snapshot_without_kept_keys_stays_for_the_member_check(tmp_path: Path) -> None:
    """A restore-data journaled by a lifeboat that kept no keys: verify-member samples the snapshot."""
    plan = plan_for(tmp_path)
    drop = {s.key: s for s in plan.steps}["drop-snapshot"]
    plan.paths.work.mkdir()
    plan.paths.snapshot.write_bytes(b"the fetched snapshot")
    ctx, _ = context(tmp_path, Journal("id", "c", "/d", "m0", "m0=u", "tok", "stamp"))
    drop.run(ctx)
    ctx.removed()
    assert plan.paths.snapshot.exists()


@pytest.mark.parametrize("moved", [True, False])
def test_rollback_removes_lifeboats_work_dir_and_the_decrypted_snapshot_in_it(tmp_path: Path, moved: bool) -> None:
    """A rollback left ``<data-dir>.lifeboat-work`` behind: the fetched snapshot (decrypted, every
    Secret of the cluster), the kept keys, a half-written restored dir, until someone removed it."""
    data_dir = tmp_path / "etcd"
    (data_dir / "member").mkdir(parents=True)
    paths = RestorePaths(data_dir, "20240102T030405Z")
    state: dict[str, str | None] = {}
    done = ("preflight", "fetch-snapshot", "stop:kube-apiserver", "stop:etcd")
    if moved:
        (paths.moved_aside / "member").mkdir(parents=True)
        state = {"moved_aside": str(paths.moved_aside)}
        done += ("move-aside", "restore-data", "put-in-place")
    (paths.staging / "member").mkdir(parents=True)
    paths.snapshot.write_bytes(b"decrypted snapshot")
    journal = Journal("id", "c", str(data_dir), "m0", "m0=u", "tok", paths.stamp, done=done,
                      state=state, node_changed=True)  # type: ignore[arg-type]
    plan = plan_rollback(journal, paths, MemorySupervisor(), "20240102T040000Z")
    ctx, saved = context(tmp_path, journal)
    execute(plan, ctx, auto_rollback=False)
    assert saved[-1].rolled_back and (data_dir / "member").is_dir()
    assert not paths.work.exists()
    if moved:
        assert not paths.moved_aside.exists()
        assert (tmp_path / "etcd.lifeboat-restored-20240102T040000Z" / "member").is_dir()  # kept, never deleted


def test_a_step_that_fills_the_disk_stops_the_restore_with_the_disk_exit_code(tmp_path: Path) -> None:
    """ENOSPC in a step (the WAL segment of the restored data dir, after the old data dir was
    moved aside) ended the restore with exit 1 and a raw '[Errno 28]', not exit 5."""

    @dataclass(frozen=True)
    class Full(Recorded):
        def run(self, ctx: RestoreContext) -> None:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "etcd.lifeboat-work/data"))

    plan = RestorePlan("t", plan_for(tmp_path).paths, (Recorded("move-aside"), Full("restore-data")), (), ())
    ctx, saved = context(tmp_path, Journal("id", "c", "/d", "m0", "m0=u", "tok", "stamp"))
    with pytest.raises(NoRoom) as raised:
        execute(plan, ctx, auto_rollback=False)
    assert raised.value.exit_code == 5 and saved[-1].done == ("move-aside",)
    assert f"No space left on device writing {tmp_path / 'etcd.lifeboat-work/data'}" in str(raised.value)
    assert "re-run the same command to resume" in str(raised.value) and "Errno" not in str(raised.value)


def test_a_journal_that_cannot_be_written_for_a_full_disk_is_a_disk_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("lifeboat.restore.journal.replace_durably", full)
    with pytest.raises(NoRoom, match="No space left on device; free space") as raised:
        save_journal(journal_path(tmp_path / "etcd"), Journal("id", "c", "/d", "m0", "m0=u", "tok", "stamp"))
    assert raised.value.exit_code == 5


def test_rollback_whose_old_data_dir_is_gone_stops_nothing_and_keeps_the_restored_data_in_place(
    tmp_path: Path,
) -> None:
    """With the moved-aside data dir removed by hand, a rollback stopped etcd, moved the restored
    data dir aside and only then found nothing to put back: the node had no data dir at all."""
    data_dir = tmp_path / "etcd"
    (data_dir / "member").mkdir(parents=True)
    gone = tmp_path / "etcd.lifeboat-moved-20240102T030405Z"
    journal = Journal("id", "c", str(data_dir), "m0", "m0=u", "tok", "20240102T030405Z", finished=True,
                      done=("preflight", "fetch-snapshot", "stop:etcd", "move-aside", "restore-data", "put-in-place"),
                      state={"moved_aside": str(gone)}, node_changed=True)
    supervisor = MemorySupervisor()
    plan = plan_rollback(journal, RestorePaths(data_dir, journal.stamp), supervisor, "20240102T040000Z")
    ctx, _saved = context(tmp_path, journal)
    ctx.supervisor = supervisor
    with pytest.raises(OperationFailed, match=f"{gone} is gone") as refused:
        execute(plan, ctx, auto_rollback=False)
    assert f"{data_dir} keeps the restored data" in str(refused.value)
    assert supervisor.calls == [] and (data_dir / "member").is_dir()
    assert not list(tmp_path.glob("etcd.lifeboat-restored-*"))


@pytest.mark.parametrize("shape", ["symlink", "open to others", "file"])
def test_a_work_dir_lifeboat_did_not_make_is_refused_before_the_decrypted_backup_is_written_to_it(
    tmp_path: Path, shape: str,
) -> None:
    """A ``<data-dir>.lifeboat-work`` that was a symlink got the decrypted snapshot written where it
    pointed (another user's directory, another filesystem) and the restore then failed after the
    old data dir was moved aside ('Invalid cross-device link')."""
    plan = plan_for(tmp_path)
    (tmp_path / "etcd/member").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o777)
    if shape == "symlink":
        plan.paths.work.symlink_to(elsewhere)
    elif shape == "open to others":
        plan.paths.work.mkdir()
        plan.paths.work.chmod(0o777)
    else:
        plan.paths.work.write_text("")
    ctx, _saved = context(tmp_path, Journal("id", "c", "/d", "m0", "m0=u", "tok", "stamp"))
    ctx = replace(ctx, manifest=manifest(), tool=FakeTool(), free_space=lambda path: 1 << 40)
    preflight, fetch = plan.steps[0], plan.steps[1]
    for step in (preflight.check, fetch.run):
        with pytest.raises(UsageError, match=f"{plan.paths.work} .*lifeboat's work dir"):
            step(ctx)
    assert list(elsewhere.iterdir()) == []


def test_a_failed_member_under_supervisor_none_is_left_for_the_operator_to_stop_and_roll_back(
    tmp_path: Path,
) -> None:
    """With --supervisor none the automatic rollback began, then stopped at once at its first
    stop ("etcd is still running; stop it yourself"): lifeboat cannot stop the etcd the operator
    started, and the failure that caused it was no longer the error. It now leaves the restored
    member as it is and says how to roll back."""
    data_dir = tmp_path / "etcd"
    (data_dir / "member").mkdir(parents=True)
    moved = tmp_path / "etcd.lifeboat-moved-20240102T030405Z"
    (moved / "member").mkdir(parents=True)
    plan = RestorePlan("t", plan_for(tmp_path).paths,
                       (Recorded("verify-member", fail=True, undo_on_failure=True),), (), ())
    journal = Journal("id", "c", str(data_dir), "m0", "m0=u", "tok", "20240102T030405Z",
                      state={"moved_aside": str(moved)}, node_changed=True)
    ctx, saved = context(tmp_path, journal)
    ctx.supervisor = ManualSupervisor(NodeLiveness(("127.0.0.1:1",), data_dir))
    ctx.start_timeout = ctx.stop_timeout = 0.2
    with pytest.raises(OperationFailed) as raised:
        execute(plan, ctx, auto_rollback=True)
    message = str(raised.value)
    assert "verify-member failed" in message and "stop etcd, then run 'lifeboat restore --rollback'" in message
    assert (data_dir / "member").is_dir() and (moved / "member").is_dir()
    assert ctx.journal.rollback_stamp is None and ctx.journal.rollback_done == () and saved == []


def test_a_restore_refused_at_stop_under_supervisor_none_changed_nothing_and_blocks_no_later_restore(
    tmp_path: Path,
) -> None:
    """With --supervisor none, stop:etcd only checks that the operator stopped etcd, yet a restore
    refused there (etcd still running) was journaled as having changed the node: the next restore
    was refused until a --rollback that had nothing to roll back."""
    data_dir = tmp_path / "etcd"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        supervisor = ManualSupervisor(NodeLiveness((f"http://127.0.0.1:{listener.getsockname()[1]}",), data_dir))
        plan = plan_for(tmp_path, supervisor=supervisor)
        stop = next(step for step in plan.steps if step.key == "stop:etcd")
        journal = Journal("id", "c", str(data_dir), "m0", "m0=u", "tok", "20240102T030405Z",
                          done=("preflight", "fetch-snapshot"))
        ctx, saved = context(tmp_path, journal)
        ctx.supervisor = supervisor
        with pytest.raises(OperationFailed, match="etcd is still running"):
            execute(RestorePlan("t", plan.paths, (stop,), (), ()), ctx, auto_rollback=True)
    assert not ctx.journal.node_changed and not ctx.journal.unfinished
    assert all(not j.node_changed for j in saved)
    assert next(s for s in plan_for(tmp_path).steps if s.key == "stop:etcd").changes_node  # a supervisor that stops it

"""Planning a member replacement (refusals, steps) and running it against an in-memory etcd."""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lifeboat import durable
from lifeboat.clock import FakeClock
from lifeboat.errors import EtcdUnavailable, NotFound, OperationFailed, UsageError
from lifeboat.etcd.memory import Fault, MemoryEtcd
from lifeboat.etcdapi.model import Member, MemberList, MemberStatus
from lifeboat.recovery.health import ClusterHealth, assess
from lifeboat.recovery.member_replace import (
    OperatorStarter,
    ReplacePlan,
    StartSpec,
    StepKind,
    moved_aside_path,
    plan_replacement,
    replace_member,
)

STAMP = "20250304T050607Z"


def url(i: int) -> str:
    return f"https://10.0.0.{i}:2379"


def peer(i: int) -> str:
    return f"https://10.0.0.{i}:2380"


def member(i: int, learner: bool = False) -> Member:
    return Member(i, f"m{i}", (peer(i),), (url(i),), learner)


def status(i: int, leader: int = 1, applied: int = 100, learner: bool = False) -> MemberStatus:
    return MemberStatus(url(i), i, 7, "3.5.9", 1 << 20, 1 << 19, leader, applied, 3, applied, learner, (), 50)


def health_of(size: int, down: set[int], learners: set[int] | None = None) -> ClusterHealth:
    learners = learners or set()
    alive = [i for i in range(1, size + 1) if i not in down]
    leader = next((i for i in alive if i not in learners), 0)
    members = MemberList(7, tuple(member(i, i in learners) for i in range(1, size + 1)), 1)
    statuses = {i: status(i, leader, learner=i in learners) for i in alive}
    return assess(members, statuses, {i: "refused" for i in down}, [])


def plan(health: ClusterHealth, name: str, **kwargs: Any) -> ReplacePlan:
    return plan_replacement(health, name, stamp=STAMP, starter=OperatorStarter(), **kwargs)


def test_dead_member_is_removed_moved_aside_added_started_and_promoted() -> None:
    p = plan(health_of(3, {3}), "m3", data_dir=Path("/var/lib/etcd"), data_dir_exists=True)
    assert [s.kind for s in p.steps] == [StepKind.REMOVE, StepKind.MOVE_DATA_DIR, StepKind.ADD_LEARNER,
                                         StepKind.START, StepKind.PROMOTE]
    assert p.moved_to == Path("/var/lib/etcd.lifeboat-moved-20250304T050607Z")
    assert p.peer_urls == (peer(3),)
    assert p.member_id == 3
    assert "move the data dir /var/lib/etcd aside" in p.describe()[1]


def test_moved_aside_name_is_a_timestamped_sibling() -> None:
    assert moved_aside_path(Path("/data/etcd/"), STAMP) == Path("/data/etcd.lifeboat-moved-20250304T050607Z")
    assert moved_aside_path(Path("/data/etcd"), f"{STAMP}-2") == Path("/data/etcd.lifeboat-moved-20250304T050607Z-2")


def test_healthy_member_is_refused_unless_forced() -> None:
    with pytest.raises(OperationFailed, match="m2 is healthy.*--force"):
        plan(health_of(3, set()), "m2")
    assert plan(health_of(3, set()), "m2", force=True).steps[0].kind is StepKind.REMOVE


def test_lost_quorum_is_refused_with_a_pointer_to_restore() -> None:
    with pytest.raises(OperationFailed, match="quorum is lost.*restore every member"):
        plan(health_of(3, {2, 3}), "m3")


def test_even_cluster_without_quorum_is_refused_although_removal_arithmetic_fits() -> None:
    # 4 members, 2 down: 2 healthy < quorum 3; after removing one, 2 >= quorum 2 of 3,
    # but etcd cannot commit the removal itself.
    with pytest.raises(OperationFailed, match="quorum is lost"):
        plan(health_of(4, {3, 4}), "m4")


def test_forced_removal_that_would_lose_quorum_is_refused() -> None:
    with pytest.raises(OperationFailed, match="would leave 1 healthy of 2 voting members"):
        plan(health_of(3, {3}), "m2", force=True)


def test_single_member_cluster_cannot_replace_its_member() -> None:
    with pytest.raises(UsageError, match="lifeboat restore"):
        plan(health_of(1, set()), "m1", force=True)


def test_unknown_member_needs_peer_urls() -> None:
    with pytest.raises(NotFound, match="--peer-urls"):
        plan(health_of(3, set()), "m9")
    p = plan(health_of(3, set()), "m9", peer_urls=[peer(9)])
    assert [s.kind for s in p.steps] == [StepKind.ADD_LEARNER, StepKind.START, StepKind.PROMOTE]
    assert p.member_id is None


def test_running_learner_is_only_promoted() -> None:
    p = plan(health_of(3, set(), learners={3}), "m3")
    assert [s.kind for s in p.steps] == [StepKind.PROMOTE]


def test_data_dir_elsewhere_or_absent_is_a_note_not_a_step() -> None:
    elsewhere = plan(health_of(3, {3}), "m3")
    assert StepKind.MOVE_DATA_DIR not in [s.kind for s in elsewhere.steps]
    assert any("not on this host" in n for n in elsewhere.notes)
    absent = plan(health_of(3, {3}), "m3", data_dir=Path("/nope"), data_dir_exists=False)
    assert any("does not exist" in n for n in absent.notes)


def test_nothing_answering_is_refused_as_etcd_unavailable() -> None:
    # Exit 2 as status gives for the same cause, not the 1 of a failed operation.
    with pytest.raises(EtcdUnavailable, match="no etcd member answered") as refused:
        plan(assess(None, {}, {}, []), "m1")
    assert refused.value.exit_code == 2


def test_start_spec_flags_say_existing_cluster() -> None:
    spec = StartSpec("m3", (peer(3),), f"m1={peer(1)},m3={peer(3)}", Path("/var/lib/etcd"))
    assert "--initial-cluster-state=existing" in spec.flags()
    assert spec.environment()["LIFEBOAT_INITIAL_CLUSTER"] == f"m1={peer(1)},m3={peer(3)}"
    assert not any(k.startswith("ETCD_") for k in spec.environment())


def running_cluster(clock: FakeClock, down: int) -> MemoryEtcd:
    """Three members at ``url(i)``; member ``down`` has stopped. Learners catch up 40 entries per 0.5 s poll."""
    etcd = MemoryEtcd(clock, members=[member(i) for i in (1, 2, 3)], cluster_id=7, catch_up_rate=80)
    etcd.stop(down)
    return etcd


def health_now(etcd: MemoryEtcd) -> ClusterHealth:
    statuses = {i: etcd.status(url(i)) for i in (1, 2)}
    return assess(etcd.member_list(), statuses, {3: "refused"}, [])


class FakeStarter:
    """Starts the member etcd added last (it has no name yet) on ``url(3)``."""

    def __init__(self, etcd: MemoryEtcd) -> None:
        self.etcd = etcd
        self.specs: list[StartSpec] = []

    def describe(self) -> str:
        return "start it in memory"

    def start(self, spec: StartSpec, report: Callable[[str], None]) -> None:
        self.specs.append(spec)
        added = next(i for i, state in self.etcd.members.items() if not state.member.name)
        self.etcd.start(added, spec.name, url(3))


def test_replacement_runs_every_step_and_retries_what_etcd_says_is_not_yet_possible(tmp_path: Path) -> None:
    clock = FakeClock()
    etcd = running_cluster(clock, down=3)
    # etcd refuses the first add (a member just removed) and the first promote, as it does.
    etcd.inject(Fault("member_add", EtcdUnavailable("member add: no etcd endpoint answered; tried x "
                                                   "(UNAVAILABLE: etcdserver: unhealthy cluster)")))
    etcd.inject(Fault("member_promote", OperationFailed("member promote failed: etcdserver: can only promote "
                                                        "a learner member which is in sync with leader")))
    data_dir = tmp_path / "etcd"
    (data_dir / "member").mkdir(parents=True)
    p = plan_replacement(health_now(etcd), "m3", stamp=STAMP, starter=OperatorStarter(), data_dir=data_dir,
                         data_dir_exists=True)
    starter, lines = FakeStarter(etcd), list[str]()
    result = replace_member(etcd, p, starter, [url(1)], report=lines.append, clock=clock)
    assert (etcd.calls["member_remove"], etcd.calls["member_add"], etcd.calls["member_promote"]) == (1, 2, 2)
    assert [(m.id, m.peer_urls, m.is_learner) for m in etcd.member_list().members] == [
        (1, (peer(1),), False), (2, (peer(2),), False), (result.member_id, (peer(3),), False)]
    assert not data_dir.exists() and p.moved_to is not None and (p.moved_to / "member").is_dir()
    assert starter.specs[0].initial_cluster == f"m1={peer(1)},m2={peer(2)},m3={peer(3)}"
    assert result.member_id not in (1, 2, 3)
    assert result.health.summary() == "3 voting members, 3 healthy, quorum 2, can lose 1"
    assert any("promoted" in line for line in lines)


def planned_move(tmp_path: Path) -> tuple[FakeClock, MemoryEtcd, Path, ReplacePlan, Path]:
    """Member m3 of a running cluster is down; its data dir ``tmp_path/etcd`` holds a db; the plan that replaces it."""
    clock = FakeClock()
    etcd = running_cluster(clock, down=3)
    data_dir = tmp_path / "etcd"
    (data_dir / "member" / "snap").mkdir(parents=True)
    (data_dir / "member" / "snap" / "db").write_bytes(b"the old member's db")
    p = plan_replacement(health_now(etcd), "m3", stamp=STAMP, starter=OperatorStarter(), data_dir=data_dir,
                         data_dir_exists=True)
    assert p.moved_to is not None
    return clock, etcd, data_dir, p, p.moved_to


def test_a_moved_aside_name_taken_after_the_plan_is_refused_leaving_both_dirs_as_they_were(tmp_path: Path) -> None:
    clock, etcd, data_dir, p, moved_to = planned_move(tmp_path)
    moved_to.mkdir()  # e.g. a restore of the same data dir within the same second, since the plan
    with pytest.raises(OperationFailed, match=r"etcd\.lifeboat-moved-20250304T050607Z appeared after the plan "
                       r"was made; nothing was moved: re-run 'lifeboat member replace m3' \(add --peer-urls"):
        replace_member(etcd, p, FakeStarter(etcd), [url(1)], report=lambda _: None, clock=clock)
    assert (data_dir / "member").is_dir() and list(moved_to.iterdir()) == []
    os.symlink(tmp_path / "gone", tmp_path / "etcd.lifeboat-moved-x")  # a dangling symlink is taken too
    taken = replace_plan_moving(p, tmp_path / "etcd.lifeboat-moved-x")
    with pytest.raises(OperationFailed, match="appeared after the plan"):
        replace_member(etcd, taken, FakeStarter(etcd), [url(1)], report=lambda _: None, clock=clock)
    assert (data_dir / "member").is_dir() and os.readlink(tmp_path / "etcd.lifeboat-moved-x") == str(tmp_path / "gone")


def test_a_moved_aside_name_made_after_the_look_and_before_the_rename_is_not_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The name was free when looked at; another process made it (an empty dir, which a plain
    # rename of a directory replaces without a word) before the rename.
    clock, etcd, data_dir, p, moved_to = planned_move(tmp_path)
    moved_to.mkdir()
    looked = os.path.lexists
    monkeypatch.setattr(os.path, "lexists", lambda path: Path(path) != moved_to and looked(path))
    with pytest.raises(OperationFailed, match="appeared after the plan was made; nothing was moved"):
        replace_member(etcd, p, FakeStarter(etcd), [url(1)], report=lambda _: None, clock=clock)
    assert (data_dir / "member" / "snap" / "db").read_bytes() == b"the old member's db"
    assert list(moved_to.iterdir()) == []


def test_the_move_aside_is_synced_in_the_parent_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Until the directory holding both names is fsynced, a crash can undo the rename.
    clock, etcd, data_dir, p, moved_to = planned_move(tmp_path)
    synced: list[tuple[Path, bool]] = []
    monkeypatch.setattr(durable, "fsync_dir",
                        lambda d: synced.append((d, moved_to.is_dir() and not data_dir.exists())))
    replace_member(etcd, p, FakeStarter(etcd), [url(1)], report=lambda _: None, clock=clock)
    assert synced == [(tmp_path, True)]  # after the rename, once: both names are in tmp_path


def test_a_move_aside_whose_directory_cannot_be_synced_says_it_moved(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    clock, etcd, data_dir, p, moved_to = planned_move(tmp_path)

    def failing(directory: Path) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(durable, "fsync_dir", failing)
    with pytest.raises(OperationFailed, match=r"^moved .*etcd aside to .*etcd\.lifeboat-moved-20250304T050607Z, "
                       r"but flushing .* to disk failed: Input/output error; check the disk"):
        replace_member(etcd, p, FakeStarter(etcd), [url(1)], report=lambda _: None, clock=clock)
    assert (moved_to / "member" / "snap" / "db").read_bytes() == b"the old member's db"


def replace_plan_moving(p: ReplacePlan, moved_to: Path) -> ReplacePlan:
    """``p`` with only its move step left, to ``moved_to``."""
    move = next(s for s in p.steps if s.kind is StepKind.MOVE_DATA_DIR)
    return dataclasses.replace(p, moved_to=moved_to, steps=(move,))


def test_member_that_never_starts_gives_up_with_a_resumable_error() -> None:
    clock = FakeClock()
    etcd = running_cluster(clock, down=3)
    p = plan_replacement(health_now(etcd), "m3", stamp=STAMP, starter=OperatorStarter())
    with pytest.raises(OperationFailed, match="m3 to start and answer after 30s.*re-run to resume"):
        replace_member(etcd, p, OperatorStarter(), [url(1)], report=lambda _: None, timeout=30, clock=clock)
    assert (etcd.calls["member_remove"], etcd.calls["member_add"], etcd.calls["member_promote"]) == (1, 1, 0)
    assert [(m.peer_urls, m.is_learner) for m in etcd.member_list().members] == [
        ((peer(1),), False), ((peer(2),), False), ((peer(3),), True)]

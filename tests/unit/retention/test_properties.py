"""Hypothesis properties of evaluate() over random listings, policies and floors."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from lifeboat.errors import OperationFailed
from lifeboat.retention import (
    BackupRecord,
    KeepDaily,
    KeepHourly,
    KeepLast,
    KeepMonthly,
    KeepWeekly,
    KeepWithin,
    KeepYearly,
    Policy,
    RecoveryWindow,
    Verdict,
    evaluate,
)
from tests.unit.retention.backups import NOW

# Offsets from now on several scales so that hours, days, weeks and years all collide;
# a few land after now (clock skew).
offsets = st.one_of(
    st.integers(-600, 30).map(lambda m: timedelta(minutes=m)),
    st.integers(-72, 1).map(lambda h: timedelta(hours=h)),
    st.integers(-60, 0).map(lambda d: timedelta(days=d)),
    st.integers(-1500, 0).map(lambda d: timedelta(days=d, hours=3)),
)
records = st.lists(
    st.tuples(
        offsets,
        st.sampled_from(["complete", "complete", "complete", "failed", "in-progress"]),
        st.sampled_from([False, False, False, True]),
        st.sampled_from(["a", "b"]),
        st.integers(0, 1000),
    ),
    max_size=25,
).map(
    lambda rows: [
        BackupRecord(f"id-{i}", cluster, NOW + offset, status, pinned=pinned, size=size)
        for i, (offset, status, pinned, cluster, size) in enumerate(rows)
    ]
)
counts = st.integers(1, 6)
durations = st.sampled_from([timedelta(hours=h) for h in (1, 6, 36, 24 * 7, 24 * 30)])
policy = st.one_of(
    counts.map(KeepLast),
    counts.map(KeepHourly),
    counts.map(KeepDaily),
    counts.map(KeepWeekly),
    counts.map(KeepMonthly),
    counts.map(KeepYearly),
    durations.map(KeepWithin),
    durations.map(RecoveryWindow),
)
policies = st.lists(policy, min_size=1, max_size=4, unique_by=lambda p: p.name)
floors = st.integers(1, 4)

# No deadline: CI machines are shared and a slow example is not a wrong one.
relaxed = settings(deadline=None)


def past_complete(backups: Iterable[BackupRecord], cluster: str) -> list[BackupRecord]:
    chosen = [b for b in backups if b.cluster == cluster and b.is_complete and b.taken_at <= NOW]
    return sorted(chosen, key=lambda b: b.taken_at, reverse=True)


@relaxed
@given(records, policies, floors)
def test_every_backup_has_exactly_one_verdict_with_a_reason(
    backups: list[BackupRecord], chosen: list[Policy], floor: int
) -> None:
    plan = evaluate(chosen, backups, NOW, min_redundancy=floor)
    assert sorted(d.backup.id for d in plan.decisions) == sorted(b.id for b in backups)
    for decision in plan.decisions:
        assert decision.reasons and all(decision.reasons)
        word = "kept: " if decision.verdict is Verdict.KEEP else "deleted: "
        assert decision.reason.startswith(word)
    assert len(plan.to_keep) + len(plan.to_delete) == len(backups)
    times = [d.backup.taken_at for d in plan.decisions]
    assert times == sorted(times, reverse=True)


@relaxed
@given(records, policies, floors)
def test_pinned_and_future_backups_are_never_deleted(
    backups: list[BackupRecord], chosen: list[Policy], floor: int
) -> None:
    plan = evaluate(chosen, backups, NOW, min_redundancy=floor)
    assert not [b for b in plan.to_delete if b.pinned or b.taken_at > NOW]


@relaxed
@given(records, policies, floors)
def test_never_fewer_complete_backups_than_the_floor_when_enough_exist(
    backups: list[BackupRecord], chosen: list[Policy], floor: int
) -> None:
    kept = set(evaluate(chosen, backups, NOW, min_redundancy=floor).to_keep)
    for cluster in ("a", "b"):
        complete = past_complete(backups, cluster)
        assert len([b for b in complete if b in kept]) >= min(floor, len(complete))


@relaxed
@given(records, policies, floors)
def test_applying_the_plan_and_evaluating_again_deletes_nothing_more(
    backups: list[BackupRecord], chosen: list[Policy], floor: int
) -> None:
    first = evaluate(chosen, backups, NOW, min_redundancy=floor)
    second = evaluate(chosen, first.to_keep, NOW, min_redundancy=floor)
    assert second.to_delete == ()
    assert second.decisions == tuple(d for d in first.decisions if d.verdict is Verdict.KEEP)


@relaxed
@given(records, counts, floors)
def test_keep_last_keeps_the_newest_n_complete_backups(
    backups: list[BackupRecord], n: int, floor: int
) -> None:
    kept = set(evaluate([KeepLast(n)], backups, NOW, min_redundancy=floor).to_keep)
    for cluster in ("a", "b"):
        complete = past_complete(backups, cluster)
        kept_complete = [b for b in complete if b in kept]
        assert len(kept_complete) >= min(n, len(complete))
        for deleted in (b for b in complete if b not in kept):
            assert len([b for b in kept_complete if b.taken_at >= deleted.taken_at]) >= n


@relaxed
@given(records, policies, floors)
def test_input_order_does_not_change_the_plan(
    backups: list[BackupRecord], chosen: list[Policy], floor: int
) -> None:
    forward = evaluate(chosen, backups, NOW, min_redundancy=floor)
    backward = evaluate(chosen, list(reversed(backups)), NOW, min_redundancy=floor)
    assert forward == backward


@relaxed
@given(records, policies, floors)
def test_incomplete_backup_is_deleted_only_when_superseded_and_past_the_grace(
    backups: list[BackupRecord], chosen: list[Policy], floor: int
) -> None:
    plan = evaluate(chosen, backups, NOW, min_redundancy=floor)
    for gone in plan.to_delete:
        if gone.is_complete:
            continue
        newest = past_complete(backups, gone.cluster)
        assert newest and newest[0].taken_at >= gone.taken_at
        assert NOW - gone.taken_at >= timedelta(hours=6)


@relaxed
@given(records, policies)
def test_without_a_floor_a_plan_is_refused_exactly_when_it_keeps_no_complete_backup(
    backups: list[BackupRecord], chosen: list[Policy]
) -> None:
    with_floor = evaluate(chosen, backups, NOW, min_redundancy=1)
    floor_only = {
        d.backup.cluster
        for d in with_floor.decisions
        if d.reasons == ("minimum redundancy floor (1)",)
    }
    try:
        plan = evaluate(chosen, backups, NOW, min_redundancy=0)
    except OperationFailed as refused:
        assert floor_only
        assert "refusing to delete all" in str(refused)
    else:
        assert not floor_only
        assert plan.decisions == with_floor.decisions

"""evaluate(): pins, union of policies, the floor, incomplete backups, clock skew, refusal."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from lifeboat.errors import OperationFailed, UsageError
from lifeboat.retention import (
    BackupRecord,
    KeepDaily,
    KeepLast,
    KeepWithin,
    RetentionPlan,
    Verdict,
    evaluate,
    parse_policies,
)
from tests.unit.retention.backups import NOW, backup, ids

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def reasons(plan: RetentionPlan) -> dict[str, str]:
    return {d.backup.id: d.reason for d in plan.decisions}


def test_every_backup_gets_one_decision_newest_first_whatever_the_input_order() -> None:
    # Ids deliberately do not sort by time: order must come from taken_at.
    records = [backup("b", NOW - 3 * HOUR), backup("c", NOW - HOUR), backup("a", NOW - 2 * HOUR)]
    plan = evaluate([KeepLast(1)], records, NOW)
    assert [d.backup.id for d in plan.decisions] == ["c", "a", "b"]
    assert reasons(plan) == {
        "c": "kept: newest 1 (keep-last 1)",
        "a": "deleted: matched no policy",
        "b": "deleted: matched no policy",
    }
    assert ids(plan.to_keep) == ["c"]
    assert ids(plan.to_delete) == ["a", "b"]


def test_keeps_from_several_policies_are_united_and_all_reasons_shown() -> None:
    records = [backup("new", "2026-11-22 10:00"), backup("mid", "2026-11-22 08:00"),
               backup("old", "2026-11-21 09:00"), backup("older", "2026-11-21 08:00")]
    plan = evaluate([KeepLast(1), KeepDaily(2)], records, NOW)
    assert reasons(plan) == {
        "new": "kept: newest 1 (keep-last 1); daily 2026-11-22 (keep-daily 2)",
        "mid": "deleted: matched no policy",
        "old": "kept: daily 2026-11-21 (keep-daily 2)",
        "older": "deleted: matched no policy",
    }


def test_the_documented_combination_keeps_the_window_and_the_backup_before_it() -> None:
    policies = parse_policies({"keep-last": 7, "keep-daily": 7, "recovery-window": "7d"})
    # A backup every 6 hours for 30 days, the newest taken exactly now.
    records = [backup(f"b{i:03d}", NOW - i * 6 * HOUR) for i in range(120)]
    plan = evaluate(policies, records, NOW)
    # 0h..168h inside the window (29 backups, the one on the edge included) + the one at 174h;
    # keep-last and keep-daily pick only backups already inside the window.
    assert ids(plan.to_keep) == [f"b{i:03d}" for i in range(30)]
    assert reasons(plan)["b029"].startswith("kept: newest backup older than the recovery window")


def test_pinned_backup_is_kept_though_no_policy_matches() -> None:
    records = [backup("new", NOW - HOUR), backup("pin", NOW - 400 * DAY, pinned=True)]
    assert reasons(evaluate([KeepLast(1)], records, NOW))["pin"] == "kept: pinned"


def test_pinned_failed_backup_is_kept() -> None:
    records = [
        backup("new", NOW - HOUR),
        backup("pin", NOW - 9 * DAY, status="failed", pinned=True),
    ]
    assert reasons(evaluate([KeepLast(1)], records, NOW))["pin"] == "kept: pinned"


def test_pinned_backup_also_matched_by_a_policy_shows_both_reasons() -> None:
    records = [backup("pin", NOW - HOUR, pinned=True)]
    plan = evaluate([KeepLast(3)], records, NOW)
    assert reasons(plan)["pin"] == "kept: pinned; newest 3 (keep-last 3)"


def test_floor_keeps_the_newest_backups_when_policies_keep_too_few() -> None:
    records = [backup(f"b{i}", NOW - (i + 2) * DAY) for i in range(4)]
    plan = evaluate([KeepWithin(DAY)], records, NOW, min_redundancy=2)
    assert reasons(plan) == {
        "b0": "kept: minimum redundancy floor (2)",
        "b1": "kept: minimum redundancy floor (2)",
        "b2": "deleted: matched no policy",
        "b3": "deleted: matched no policy",
    }


def test_floor_counts_pinned_and_policy_kept_complete_backups() -> None:
    records = [backup("b0", NOW - 2 * DAY), backup("b1", NOW - 3 * DAY),
               backup("pin", NOW - 9 * DAY, pinned=True)]
    plan = evaluate([KeepWithin(DAY)], records, NOW, min_redundancy=2)
    assert ids(plan.to_keep) == ["b0", "pin"]


def test_floor_does_not_count_incomplete_backups() -> None:
    records = [backup("failed", NOW - HOUR, status="failed"), backup("ok", NOW - 2 * DAY)]
    plan = evaluate([KeepWithin(DAY)], records, NOW, min_redundancy=1)
    assert reasons(plan)["ok"] == "kept: minimum redundancy floor (1)"


def test_floor_above_the_number_of_backups_keeps_them_all() -> None:
    records = [backup(f"b{i}", NOW - (i + 2) * DAY) for i in range(3)]
    plan = evaluate([KeepWithin(DAY)], records, NOW, min_redundancy=5)
    assert plan.to_delete == ()


def test_incomplete_backup_older_than_newest_complete_and_the_grace_is_deleted() -> None:
    records = [backup("ok", NOW - HOUR), backup("bad", NOW - 7 * HOUR, status="failed")]
    plan = evaluate([KeepLast(5)], records, NOW)
    assert reasons(plan)["bad"] == (
        "deleted: incomplete (failed), older than the newest complete backup"
    )


def test_incomplete_backup_exactly_at_the_grace_age_is_deleted() -> None:
    records = [backup("ok", NOW - HOUR), backup("bad", NOW - 2 * HOUR, status="failed")]
    plan = evaluate([KeepLast(5)], records, NOW, incomplete_grace=2 * HOUR)
    assert ids(plan.to_delete) == ["bad"]


def test_incomplete_backup_younger_than_the_grace_is_kept_even_if_superseded() -> None:
    records = [backup("ok", NOW - HOUR), backup("running", NOW - 2 * HOUR, status="in-progress")]
    plan = evaluate([KeepLast(5)], records, NOW)
    assert reasons(plan)["running"] == (
        "kept: incomplete (in-progress), younger than the 6h grace period: may still be running"
    )


def test_incomplete_backup_newer_than_every_complete_one_is_kept() -> None:
    records = [backup("bad", NOW - 2 * DAY, status="failed"), backup("ok", NOW - 3 * DAY)]
    plan = evaluate([KeepLast(5)], records, NOW)
    assert reasons(plan)["bad"] == (
        "kept: incomplete (failed), newer than every complete backup: the latest failure"
    )


def test_only_incomplete_backups_are_all_kept_and_nothing_is_refused() -> None:
    records = [backup(f"bad{i}", NOW - i * DAY, status="failed") for i in range(1, 4)]
    plan = evaluate([KeepLast(1)], records, NOW, min_redundancy=0)
    assert plan.to_delete == ()


def test_backup_from_the_future_is_kept_and_not_counted_by_policies() -> None:
    records = [backup("future", NOW + 5 * timedelta(minutes=1)), backup("now", NOW),
               backup("old", NOW - DAY)]
    plan = evaluate([KeepLast(1)], records, NOW)
    assert reasons(plan) == {
        "future": "kept: taken at 2026-11-22T12:05:00Z, after now (2026-11-22T12:00:00Z): "
        "clocks disagree, never deleted",
        "now": "kept: newest 1 (keep-last 1)",
        "old": "deleted: matched no policy",
    }


def test_backup_from_the_future_does_not_satisfy_the_floor() -> None:
    records = [backup("future", NOW + DAY), backup("old", NOW - 3 * DAY)]
    plan = evaluate([KeepWithin(DAY)], records, NOW, min_redundancy=1)
    assert plan.to_delete == ()
    assert reasons(plan)["old"] == "kept: minimum redundancy floor (1)"


def test_plan_deleting_every_complete_backup_is_refused() -> None:
    records = [backup(f"b{i}", NOW - (i + 2) * DAY) for i in range(3)]
    refusal = "refusing to delete all 3 complete backups of cluster prod"
    with pytest.raises(OperationFailed, match=refusal):
        evaluate([KeepWithin(DAY)], records, NOW, min_redundancy=0)


def test_floor_zero_still_deletes_what_no_policy_keeps() -> None:
    records = [backup("new", NOW - HOUR), backup("old", NOW - 3 * DAY)]
    plan = evaluate([KeepWithin(DAY)], records, NOW, min_redundancy=0)
    assert ids(plan.to_delete) == ["old"]


def test_each_cluster_is_judged_on_its_own() -> None:
    records = [backup("a1", NOW - HOUR, cluster="a"), backup("a2", NOW - 2 * HOUR, cluster="a"),
               backup("b1", NOW - 3 * DAY, cluster="b"), backup("b2", NOW - 4 * DAY, cluster="b")]
    plan = evaluate([KeepLast(1)], records, NOW)
    assert ids(plan.to_keep) == ["a1", "b1"]
    assert ids(plan.to_delete) == ["a2", "b2"]


def test_same_id_in_two_clusters_is_fine_but_twice_in_one_is_refused() -> None:
    same_id = [backup("x", NOW, cluster="a"), backup("x", NOW, cluster="b")]
    assert len(evaluate([KeepLast(1)], same_id, NOW).to_keep) == 2
    with pytest.raises(OperationFailed, match="prod/x is listed twice"):
        evaluate([KeepLast(1)], [backup("x", NOW), backup("x", NOW - DAY)], NOW)


def test_times_in_other_zones_are_normalised_to_utc() -> None:
    record = backup("x", datetime(2026, 11, 22, 14, 0, tzinfo=timezone(timedelta(hours=2))))
    assert record.taken_at == NOW
    assert record.taken_at.utcoffset() == timedelta(0)


def test_naive_times_are_refused() -> None:
    with pytest.raises(OperationFailed, match="prod/x has a taken_at without a time zone"):
        BackupRecord("x", "prod", datetime(2026, 11, 22), "complete")
    with pytest.raises(UsageError, match="no time zone"):
        evaluate([KeepLast(1)], [], datetime(2026, 11, 22))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_redundancy": -1}, "min-redundancy=-1"),
        ({"incomplete_grace": -HOUR}, "must not be negative"),
    ],
)
def test_bad_arguments_are_usage_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        evaluate([KeepLast(1)], [], NOW, **kwargs)  # type: ignore[arg-type]


def test_evaluating_with_no_policy_is_refused() -> None:
    with pytest.raises(UsageError, match="no retention policy"):
        evaluate([], [backup("x", NOW)], NOW)


def test_empty_listing_gives_an_empty_plan() -> None:
    plan = evaluate([KeepLast(1)], [], NOW)
    assert plan.decisions == ()
    assert plan.summary() == "keep 0, delete 0 (0 bytes) under keep-last=1; min redundancy 1"


def test_plan_reports_sizes_and_json_ready_decisions() -> None:
    records = [backup("new", NOW - HOUR, size=10), backup("old", NOW - DAY, size=32)]
    plan = evaluate([KeepLast(1)], records, NOW)
    assert plan.bytes_to_free == 32
    assert plan.summary() == "keep 1, delete 1 (32 bytes) under keep-last=1; min redundancy 1"
    assert plan.decisions[1].verdict is Verdict.DELETE
    assert plan.decisions[1].as_dict() == {
        "id": "old",
        "cluster": "prod",
        "taken_at": "2026-11-21T12:00:00Z",
        "status": "complete",
        "pinned": False,
        "size": 32,
        "verdict": "delete",
        "reasons": ["matched no policy"],
    }

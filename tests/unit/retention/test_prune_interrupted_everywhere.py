"""A prune stopped at any one store call (a kill, an outage) loses nothing restorable, shows no
damage, and the next prune finishes it: checked at every call, over chains, folds and recovery
windows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from lifeboat.catalog.chains import ChainStore
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.timeline import build_timeline, point_at_revision
from lifeboat.errors import LifeboatError, UsageError
from lifeboat.retention import parse_policies
from lifeboat.clock import FakeClock
from lifeboat.retention.prune import CLAIM_STALE, apply_prune, plan_prune
from lifeboat.store import Fault, MemoryStore
from tests.unit.retention.test_prune_chains import NOW, S1, S2, folded_repo, repo_with_chains

SCENARIOS: dict[str, tuple[Callable[[], BackupRepository], dict[str, object]]] = {
    "chain-ends-keep-last": (repo_with_chains, {"keep-last": 1}),
    "chain-ends-window": (repo_with_chains, {"recovery-window": "7d"}),
    "fold-once": (lambda: folded_repo(S1), {"keep-last": 1}),
    "fold-twice": (lambda: folded_repo(S1, S2), {"keep-last": 1}),
    "fold-window": (lambda: folded_repo(S1, S2), {"recovery-window": "7d"}),
}


def restorable(repo: BackupRepository) -> set[int]:
    """The revisions (sampled) some base and its segments can restore; a timeline showing
    segments missing (damage) fails the test."""
    timeline = build_timeline("prod", list(repo.manifests("prod")), ChainStore(repo.store).chains("prod"))
    assert not [g for g in timeline.gaps if g.missing], timeline.gaps
    found = set()
    for revision in range(90, 5200, 3):
        try:
            point_at_revision(timeline, revision)
        except UsageError:
            continue
        found.add(revision)
    return found


def keys(repo: BackupRepository) -> list[str]:
    return sorted(o.key for o in repo.store.list(""))


@pytest.mark.parametrize("operation", ["delete", "get_range", "list", "stat"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_prune_stopped_at_any_store_call_loses_nothing_restorable_and_the_next_finishes_it(
        scenario: str, operation: str) -> None:
    build, policies = SCENARIOS[scenario]
    whole = build()
    apply_prune(whole, plan_prune(whole, parse_policies(policies), NOW))
    final_keys, final_points = keys(whole), restorable(whole)
    stopped_at = 0
    while True:
        repo = build()
        assert isinstance(repo.store, MemoryStore)
        repo.store.inject(Fault(operation, after_calls=stopped_at))
        try:
            apply_prune(repo, plan_prune(repo, parse_policies(policies), NOW))
        except LifeboatError:
            pass
        else:
            break  # the fault was never reached: every call has been tried
        assert final_points <= restorable(repo), f"stopped at {operation} call {stopped_at}"
        # The next prune finishes it once the stopped one's deletion claim is stale (until then
        # it cannot tell a stopped prune from one still running, and leaves the backup to it).
        repo.clock = FakeClock(datetime.now(UTC) + CLAIM_STALE)
        apply_prune(repo, plan_prune(repo, parse_policies(policies), NOW))
        assert keys(repo) == final_keys, f"stopped at {operation} call {stopped_at}"
        stopped_at += 1
    assert stopped_at > 0

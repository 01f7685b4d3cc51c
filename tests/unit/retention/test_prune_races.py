"""Prunes racing each other and `lifeboat pin`: each backup is deleted and reported by one prune
only, and a pin either keeps its backup or is refused, never recorded for a deleted backup.

The race is played out at every store call of one side: the other side runs whole at that
moment. Against the memory store double and a real file:// repository.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.pins import Pin
from lifeboat.catalog.repository import BackupRepository
from lifeboat.clock import FakeClock
from lifeboat.errors import NotFound, OperationFailed
from lifeboat.retention import KeepLast
from lifeboat.retention.prune import PruneResult, apply_prune, plan_prune
from lifeboat.store import MemoryStore
from lifeboat.store.local import LocalStore
from tests.unit.retention.test_prune import NOW, daily

_CALLS = ("put_bytes", "get_bytes", "get_range", "stat", "list", "delete")


class Interleaving:
    """Runs ``then`` once, just before the ``at``-th store call (counted from arming)."""

    def __init__(self) -> None:
        self.at: int | None = None
        self.calls = 0
        self.then: Callable[[], None] = lambda: None

    def arm(self, at: int, then: Callable[[], None]) -> None:
        self.at, self.calls, self.then = at, 0, then

    def before_call(self) -> None:
        if self.at is None:
            return
        if self.calls == self.at:
            self.at = None
            self.then()
            return
        self.calls += 1

    @property
    def fired(self) -> bool:
        return self.at is None


def _interleaved(base: type) -> type:
    def wrap(name: str) -> Callable[..., Any]:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            self.interleaving.before_call()
            return getattr(base, name)(self, *args, **kwargs)
        return call

    return type(f"Interleaved{base.__name__}", (base,), {name: wrap(name) for name in _CALLS})


InterleavedMemoryStore = _interleaved(MemoryStore)
InterleavedLocalStore = _interleaved(LocalStore)


def new_repo(kind: str, tmp_path: Path, n: int) -> BackupRepository:
    clock = FakeClock(NOW)
    if kind == "memory":
        store = InterleavedMemoryStore(clock=clock)
    else:
        store = InterleavedLocalStore(tmp_path / f"repo-{n}")
    store.interleaving = Interleaving()
    return BackupRepository.open(store, create=True, clock=clock)


def interleaving(repo: BackupRepository) -> Interleaving:
    found = getattr(repo.store, "interleaving")
    assert isinstance(found, Interleaving)
    return found


def intact(repo: BackupRepository, m: Manifest) -> bool:
    return repo.store.stat(repo.manifest_key(m)) is not None and repo.missing_objects(m) == []


def stored_keys(repo: BackupRepository, m: Manifest) -> list[str]:
    return [o.key for o in repo.store.list("clusters/") if m.id in o.key]


STORES = ["memory", "file"]


def each_moment(kind: str, tmp_path: Path, count: int) -> Iterator[tuple[int, BackupRepository, list[Manifest]]]:
    """For moment 0, 1, 2, ...: a fresh repository holding ``count`` daily backups."""
    for at in itertools.count():
        repo = new_repo(kind, tmp_path, at + 1)
        yield at, repo, daily(repo, count)


@pytest.mark.parametrize("kind", STORES)
def test_two_prunes_at_once_report_each_deletion_once(kind: str, tmp_path: Path) -> None:
    """Both prunes planned from the same listing reported every deletion, each claiming what the
    other deleted."""
    for at, repo, backups in each_moment(kind, tmp_path, 4):
        doomed = {b.id for b in backups[:3]}
        first, second = (plan_prune(repo, [KeepLast(1)], NOW) for _ in range(2))
        other: list[PruneResult] = []
        interleaving(repo).arm(at, lambda: other.append(apply_prune(repo, second)))
        mine = apply_prune(repo, first)
        if not interleaving(repo).fired:
            assert at > 10
            break  # the other prune ran after every call of the first
        (theirs,) = other
        assert sorted(mine.deleted + theirs.deleted) == sorted(doomed), f"at call {at}: {mine}, {theirs}"
        assert sorted(mine.skipped + theirs.skipped) == sorted(doomed), f"at call {at}"
        assert [m.id for m in repo.manifests()] == [backups[3].id]
        assert all(stored_keys(repo, b) == [] for b in backups[:3]), f"at call {at}"
    # One after the other: the second deletes nothing and says so.
    repo = new_repo(kind, tmp_path, 0)
    daily(repo, 3)
    first, second = (plan_prune(repo, [KeepLast(1)], NOW) for _ in range(2))
    assert len(apply_prune(repo, first).deleted) == 2
    late = apply_prune(repo, second)
    assert late.deleted == [] and len(late.skipped) == 2


def check_one_won(repo: BackupRepository, target: Manifest, pinned: bool, where: str) -> None:
    if pinned:
        assert intact(repo, target), f"{where}: pinned, but the backup lost objects"
        assert repo.pin_of(target) is not None, f"{where}: pinned, but no pin is recorded"
    else:
        assert repo.store.stat(repo.manifest_key(target)) is None, f"{where}: pin refused, backup kept"
        assert stored_keys(repo, target) == [], f"{where}: a pin was left for the deleted backup"


def pin_or_refused(repo: BackupRepository, target: Manifest) -> bool:
    try:
        repo.pin(target, Pin.now("race"))
    except (OperationFailed, NotFound):
        return False
    return True


@pytest.mark.parametrize("kind", STORES)
def test_a_pin_at_any_moment_of_a_prune_keeps_its_backup_or_is_refused(kind: str, tmp_path: Path) -> None:
    """`lifeboat pin ID` while `prune --apply` deleted that backup could be recorded with the
    backup deleted (or be reported done and deleted with it)."""
    for at, repo, backups in each_moment(kind, tmp_path, 2):
        target, plan = backups[0], plan_prune(repo, [KeepLast(1)], NOW)
        outcome: list[bool] = []
        interleaving(repo).arm(at, lambda: outcome.append(pin_or_refused(repo, target)))
        apply_prune(repo, plan)
        if not interleaving(repo).fired:
            assert at > 5
            break
        check_one_won(repo, target, outcome[0], f"pin before prune call {at}")


@pytest.mark.parametrize("kind", STORES)
def test_a_prune_at_any_moment_of_a_pin_deletes_the_backup_or_keeps_it_pinned(kind: str, tmp_path: Path) -> None:
    for at, repo, backups in each_moment(kind, tmp_path, 2):
        target, plan = backups[0], plan_prune(repo, [KeepLast(1)], NOW)
        results: list[PruneResult] = []
        interleaving(repo).arm(at, lambda: results.append(apply_prune(repo, plan)))
        pinned = pin_or_refused(repo, target)
        if not interleaving(repo).fired:
            assert at >= 2
            break
        check_one_won(repo, target, pinned, f"prune before pin call {at}")

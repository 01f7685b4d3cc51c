"""Retention keeps whole capture chains: a chain goes with its base, and a recovery window
keeps the base of every chain that reaches into it."""

from __future__ import annotations

from dataclasses import replace

from lifeboat.catalog.chains import ChainInfo, ChainStore
from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.segments import Predecessor
from lifeboat.retention import parse_policies
from lifeboat.retention.plan import Verdict
from lifeboat.retention.prune import apply_prune, plan_prune
from lifeboat.store.memory import MemoryStore
from tests.unit.catalog.capture_records import at, manifest, put, segment

DAY = 86400.0
NOW = at(40 * DAY)


def committed(repo: BackupRepository, m: Manifest) -> None:
    """Data first, then the manifest, as a backup writes them."""
    for obj in m.objects:
        repo.write_object(m.cluster, m.id, obj.name, [b"x" * obj.size])
    repo.commit(m)


def repo_with_chains() -> BackupRepository:
    repo = BackupRepository.open(MemoryStore(), create=True)
    oldest = manifest("20261101T000000Z-aaaaaa", 100, 0)  # its chain ended 30 days ago
    old = manifest("20261111T000000Z-bbbbbb", 200, 10 * DAY)  # its chain still runs
    middle = manifest("20261121T000000Z-cccccc", 300, 20 * DAY)  # a plain scheduled backup
    chains = ChainStore(repo.store)
    for m, last_seen in ((oldest, 10 * DAY), (old, NOW.timestamp() - at(0).timestamp() - 3600)):
        committed(repo, m)
        chains.start(ChainInfo(m.id, "prod", m.id, m.snapshot.revision, "c1", m.finished_at))
        base = m.snapshot.revision
        s = segment(Predecessor("base", base, m.id), (base + 1, last_seen, [put(b"/k", b"v", base + 1, base + 1, 1)]))
        chains.commit_segment(replace(s, chain=m.id), (), 1)
    committed(repo, middle)
    return repo


def test_recovery_window_keeps_the_base_of_a_chain_reaching_into_it_and_its_segments() -> None:
    repo = repo_with_chains()
    plan = plan_prune(repo, parse_policies({"recovery-window": "7d"}), NOW)
    verdicts = {d.backup.id: d for d in plan.retention.decisions}
    assert verdicts["20261111T000000Z-bbbbbb"].verdict is Verdict.KEEP
    assert "reaches into the recovery window" in verdicts["20261111T000000Z-bbbbbb"].reasons[0]
    assert verdicts["20261101T000000Z-aaaaaa"].verdict is Verdict.DELETE
    removed = {c.listing.info.chain: c.remove for c in plan.chains}
    assert removed == {"20261101T000000Z-aaaaaa": True, "20261111T000000Z-bbbbbb": False}


def test_prune_deletes_a_chain_with_its_base_and_keeps_the_others_whole() -> None:
    repo = repo_with_chains()
    result = apply_prune(repo, plan_prune(repo, parse_policies({"recovery-window": "7d"}), NOW))
    assert result.chains_removed == ["20261101T000000Z-aaaaaa"]
    assert [c.info.chain for c in ChainStore(repo.store).chains("prod")] == ["20261111T000000Z-bbbbbb"]
    assert len(ChainStore(repo.store).chains("prod")[0].segments) == 1

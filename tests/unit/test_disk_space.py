"""Backup, verify, drill and restore say how much disk they need and refuse before starting."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lifeboat.backup.pipeline import BackupOptions, take_backup
from lifeboat.catalog.ids import new_backup_id
from lifeboat.catalog.layout import MARKER_KEY
from lifeboat.catalog.repository import BackupRepository
from lifeboat.disk import MARGIN, RoomNeeded, free_bytes, require_room, size_text
from lifeboat.errors import EXIT_NO_ROOM, NoRoom, OperationFailed
from lifeboat.etcd.memory import MemoryEtcd, member_urls
from lifeboat.restore.executor import execute
from lifeboat.restore.journal import Journal
from lifeboat.store.memory import MemoryStore
from lifeboat.verify.backup import require_verify_room, verify_backup
from lifeboat.verify.drill import drill_extra_bytes
from tests.support.manifests import stored_object
from tests.unit.catalog.test_repository import T0, manifest
from tests.unit.restore.test_restore_plan import FakeTool, context, plan_for
from tests.unit.restore.test_restore_plan import manifest as restore_manifest

GiB = 1 << 30


class FreeSpace:
    """A fake filesystem: ``free`` bytes wherever asked, and the paths asked about."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.asked: list[Path] = []

    def __call__(self, path: Path) -> int:
        self.asked.append(path)
        return self.free


def test_room_is_refused_naming_what_needs_it_where_and_how_much(tmp_path: Path) -> None:
    with pytest.raises(OperationFailed) as caught:
        require_room(tmp_path, 8 * GiB, "the restore", "pass --tmp-dir", FreeSpace(3 * GiB))
    message = str(caught.value)
    assert "the restore needs about 8.1 GiB free in" in message and str(tmp_path) in message
    assert "which has 3.0 GiB" in message and "pass --tmp-dir" in message
    require_room(tmp_path, 8 * GiB, "the restore", "pass --tmp-dir", FreeSpace(8 * GiB + MARGIN))


def test_room_is_refused_with_its_own_exit_code(tmp_path: Path) -> None:
    with pytest.raises(NoRoom) as caught:
        require_room(tmp_path, GiB, "the restore", "pass --tmp-dir", FreeSpace(GiB))
    assert caught.value.exit_code == EXIT_NO_ROOM == 5
    assert isinstance(caught.value, OperationFailed)  # what callers that undo on failure catch


def test_the_free_space_of_a_path_not_made_yet_is_its_nearest_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    real = os.statvfs

    def statvfs(path: Path) -> os.statvfs_result:
        asked.append(str(path))
        return real(path)

    monkeypatch.setattr(os, "statvfs", statvfs)
    assert free_bytes(tmp_path / "not" / "yet") > 0
    assert asked == [str(tmp_path)]


def big_backup(store: MemoryStore) -> tuple[BackupRepository, object]:
    """A committed backup whose raw snapshot is 8 GiB (the stored object is a stand-in)."""
    repo = BackupRepository.open(store, create=True)
    m = manifest(new_backup_id(T0))
    m = m.model_copy(update={"objects": (stored_object("snapshot.db.zst", 100).model_copy(
        update={"raw_size": 8 * GiB}),)})
    store.put_bytes(repo.object_key(m, "snapshot.db.zst"), b"x" * 100)
    repo.commit(m)
    store.calls.clear()
    return repo, m


def test_verify_refuses_before_downloading_when_the_raw_snapshot_does_not_fit(tmp_path: Path) -> None:
    store = MemoryStore()
    repo, m = big_backup(store)
    free = FreeSpace(5 * GiB)

    said: list[RoomNeeded] = []
    with pytest.raises(NoRoom, match=r"checking backup .* needs about 8\.1 GiB free.*; free space or pass --tmp-dir "
                                   r"or set the config file's backup\.tmp-dir"):
        verify_backup(repo, m, None, tmp_dir=tmp_path, free_space=free, room=said.append)  # type: ignore[arg-type]

    assert free.asked == [tmp_path]
    assert [(r.path, r.need, r.free, r.enough) for r in said] == [(tmp_path, 8 * GiB + MARGIN, 5 * GiB, False)]
    assert store.calls["get_stream"] == store.calls["get_range"] == store.calls["stat"] == 0


def test_a_drill_needs_room_for_the_snapshot_and_its_restored_copy(tmp_path: Path) -> None:
    _, m = big_backup(MemoryStore())
    restored = m.snapshot.total_size  # type: ignore[attr-defined]
    require_verify_room(m, tmp_path, None, FreeSpace(8 * GiB + restored + MARGIN), extra=restored)  # type: ignore[arg-type]
    with pytest.raises(OperationFailed, match="and a restored copy"):
        require_verify_room(m, tmp_path, None, FreeSpace(8 * GiB + MARGIN), extra=restored + 1)  # type: ignore[arg-type]


def test_verify_keeping_the_snapshot_elsewhere_asks_both_places(tmp_path: Path) -> None:
    _, m = big_backup(MemoryStore())
    free = FreeSpace(9 * GiB)
    require_verify_room(m, tmp_path / "tmp", tmp_path / "keep" / "snapshot.db", free)  # type: ignore[arg-type]
    assert free.asked == [tmp_path / "tmp", tmp_path / "keep"]


def test_a_snapshot_kept_on_a_full_disk_is_refused_with_advice_about_where_it_is_kept(tmp_path: Path) -> None:
    """It advised --tmp-dir, which does not move the snapshot `verify --save-snapshot` keeps."""
    _, m = big_backup(MemoryStore())
    keep = tmp_path / "keep" / "snapshot.db"
    with pytest.raises(NoRoom) as caught:
        require_verify_room(m, tmp_path / "tmp", keep, lambda path: 9 * GiB if path == tmp_path / "tmp" else 0)  # type: ignore[arg-type]
    assert f"free in {keep.parent}" in str(caught.value) and "--tmp-dir" not in str(caught.value)
    assert "keep the snapshot on a disk with room" in str(caught.value)
    with pytest.raises(NoRoom, match="--tmp-dir"):  # the files archive is unpacked in the spool
        require_verify_room(m, tmp_path / "tmp", keep, lambda path: 0)  # type: ignore[arg-type]


def test_restore_refuses_at_preflight_before_it_fetches_or_stops_anything(tmp_path: Path) -> None:
    plan = plan_for(tmp_path)
    need = plan.steps[0].need_bytes  # type: ignore[attr-defined]
    # Said up front, in the plan, as what it needs (not as what is free), the same figure as a refusal.
    said = f"it needs about {size_text(need + MARGIN)} free beside it"
    assert said in plan.steps[0].describe()
    ctx, saved = context(tmp_path, Journal("id", "c", "/d", "m0", "m0=u", "tok", "stamp"))
    ctx = replace(ctx, free_space=FreeSpace(need - 1), manifest=restore_manifest(), tool=FakeTool())

    with pytest.raises(OperationFailed, match=f"the restore .* needs about {size_text(need + MARGIN)} free"):
        execute(plan, ctx, auto_rollback=False)

    assert all(j.done == () for j in saved)


def test_restore_asks_room_for_one_wal_segment_as_etcd_preallocates_it(tmp_path: Path) -> None:
    plan = plan_for(tmp_path)  # the fake tool cannot bump: lifeboat bumps a copy, three db-sized files
    assert plan.steps[0].need_bytes == 3 * 4096 + 64 * 1000 * 1000  # type: ignore[attr-defined]


class NoSnapshot:
    """The etcd double's members and status; a snapshot stream that must not be asked for."""

    def __init__(self, etcd: MemoryEtcd) -> None:
        self.etcd = etcd
        self.member_list, self.status, self.alarms = etcd.member_list, etcd.status, etcd.alarms
        self.streamed = 0

    def snapshot(self, endpoint: str) -> Iterator[bytes]:
        self.streamed += 1
        raise AssertionError("the snapshot was streamed although it cannot fit")


def test_backup_refuses_before_streaming_when_the_members_db_does_not_fit(tmp_path: Path) -> None:
    etcd = MemoryEtcd()
    etcd.members[1].db_size = 8 * GiB
    source = NoSnapshot(etcd)
    store = MemoryStore()
    repo = BackupRepository.open(store, create=True)
    options = BackupOptions(cluster="prod", endpoints=(member_urls(1)[0],), capture_files=False, tmp_dir=tmp_path)

    said: list[RoomNeeded] = []
    with pytest.raises(NoRoom, match=r"spooled snapshot .* needs about 8\.5 GiB free in .*; free space or pass --tmp-dir "
                                   r"or set the config file's backup\.tmp-dir"):
        take_backup(source, repo, options, free_space=FreeSpace(6 * GiB), room=said.append)  # type: ignore[arg-type]

    assert [(r.path, r.free, r.enough) for r in said] == [(tmp_path, 6 * GiB, False)]
    assert said[0].need == 8 * GiB + 8 * GiB // 20 + MARGIN
    assert said[0].text().startswith("the backup's spooled snapshot (member ") and "(6.0 GiB free)" in said[0].text()

    assert source.streamed == 0 and store.keys() == [MARKER_KEY]
    assert list(tmp_path.iterdir()) == []


def test_a_drill_needs_one_data_dir_beside_its_snapshot_with_a_point_or_without() -> None:
    # The second (bumped) restore comes after the first data dir is removed, and its bump is
    # committed into its db: never a third copy; a point is replayed into the snapshot itself.
    # A WAL segment as etcd preallocates it.
    assert drill_extra_bytes(GiB) == GiB + 64 * 1000 * 1000


def test_a_restores_fetch_on_a_full_disk_advises_room_beside_the_data_dir_not_tmp_dir(tmp_path: Path) -> None:
    """The fetch into the work dir beside the data dir, refused for room, said to 'pass --tmp-dir',
    which restore neither has nor would write the snapshot to."""
    repo, m = big_backup(MemoryStore())
    plan = plan_for(tmp_path)
    fetch = next(step for step in plan.steps if step.key == "fetch-snapshot")
    ctx, _saved = context(tmp_path, Journal("id", "c", "/d", "m0", "m0=u", "tok", "stamp"))
    ctx = replace(ctx, free_space=FreeSpace(5 * GiB), manifest=m, repo=repo, tool=FakeTool())  # type: ignore[arg-type]
    with pytest.raises(NoRoom) as caught:
        fetch.run(ctx)
    message = str(caught.value)
    assert f"free in {plan.paths.work}" in message and "--tmp-dir" not in message, message
    assert "nothing on the node was changed" in message

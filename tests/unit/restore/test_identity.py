"""Whether a backup comes from this node's etcd cluster, from the live member or the data dir."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from lifeboat.catalog.manifest import BackupStatus, Manifest
from lifeboat.errors import EtcdUnavailable, OperationFailed
from lifeboat.snapshot import cluster_id_from_members
from lifeboat.restore.identity import (
    NodeCluster, check_same_cluster, read_node_cluster, repeats_finished_restore, same_cluster,
)
from lifeboat.restore.journal import Journal
from lifeboat.restore.member_files import new_cluster
from tests.support.manifests import SOURCE, snapshot_info, stored_object

DB = Path("/var/lib/etcd/member/snap/db")


def backup(member_id: int, cluster_id: int) -> Manifest:
    return Manifest(
        id="20240101T000000Z-abcdef", cluster="prod", status=BackupStatus.COMPLETE,
        started_at="2024-01-01T00:00:00Z", finished_at="2024-01-01T00:00:09Z", tool_version="0",
        source=SOURCE.model_copy(update={"member_id": f"{member_id:x}", "cluster_id": f"{cluster_id:x}"}),
        snapshot=snapshot_info(), compression="zstd:1", encryption=None, recipients=(), objects=(stored_object(),),
    )


def offline(*members: int, removed: tuple[int, ...] = ()) -> NodeCluster:
    return NodeCluster(None, frozenset(members), frozenset(removed), DB)


def test_live_member_decides_by_cluster_id() -> None:
    assert same_cluster(backup(1, 0xA), NodeCluster(0xA, frozenset(), frozenset(), DB)) is True
    assert same_cluster(backup(1, 0xA), NodeCluster(0xB, frozenset({1}), frozenset(), DB)) is False


def test_data_dir_of_the_same_cluster_has_the_source_member_current_or_removed() -> None:
    assert same_cluster(backup(2, 0xA), offline(1, 2, 3)) is True
    assert same_cluster(backup(9, 0xA), offline(1, 2, 3, removed=(9,))) is True


def test_data_dir_whose_initial_members_give_the_backups_cluster_id_is_the_same_cluster() -> None:
    assert same_cluster(backup(9, cluster_id_from_members({4, 5})), offline(4, 5)) is True
    assert same_cluster(backup(9, cluster_id_from_members({4, 5})), offline(5, removed=(4,))) is True


def test_data_dir_of_another_cluster_is_refused_unless_forced() -> None:
    manifest, node = backup(9, 0xA), offline(1, 2)
    assert same_cluster(manifest, node) is False
    with pytest.raises(OperationFailed, match=r"etcd cluster a, but .*members 1, 2.*--force"):
        check_same_cluster(manifest, node, force=False)
    check_same_cluster(manifest, node, force=True)


def test_a_node_that_says_nothing_refuses_nothing() -> None:
    node = offline()
    assert same_cluster(backup(9, 0xA), node) is None
    check_same_cluster(backup(9, 0xA), node, force=False)


class Silent:
    def cluster_id(self) -> int:
        raise EtcdUnavailable("nothing answers")


def test_absent_or_unreadable_data_dir_is_unknown(tmp_path: Path) -> None:
    assert read_node_cluster(tmp_path / "absent", Silent()).member_ids == frozenset()
    db = tmp_path / "etcd" / "member" / "snap" / "db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"not a bbolt file" * 512)
    node = read_node_cluster(tmp_path / "etcd", Silent())
    assert node.live_cluster_id is None and node.member_ids == frozenset()


FINISHED = Journal(backup_id="b1", cluster="prod", data_dir="/var/lib/etcd", name="m0",
                   initial_cluster="m0=https://10.0.0.1:2380,m1=https://10.0.0.2:2380", token="tok",
                   stamp="20240102T030405Z", finished=True, node_changed=True)
RESTORED = new_cluster([("m0", ["https://10.0.0.1:2380"]), ("m1", ["https://10.0.0.2:2380"])], "tok")


def test_the_same_restore_asked_again_is_recognised_on_the_cluster_it_made() -> None:
    asked = replace(FINISHED, stamp="20240103T000000Z", finished=False, node_changed=False)
    ids = [m.id for m in RESTORED.members]
    assert repeats_finished_restore(FINISHED, asked, NodeCluster(RESTORED.id, frozenset(), frozenset(), DB))
    assert repeats_finished_restore(FINISHED, asked, offline(*ids))  # etcd not started (--no-start)
    assert repeats_finished_restore(FINISHED, asked, offline(*ids, 7))  # a member added since


@pytest.mark.parametrize("change", [{"backup_id": "b2"}, {"point_revision": 9}, {"name": "m1"},
                                    {"token": "other"}, {"data_dir": "/srv/etcd"},
                                    {"initial_cluster": "m0=https://10.0.0.1:2380"}])
def test_another_restore_than_the_finished_one_is_not_a_repeat(change: dict[str, object]) -> None:
    asked = replace(FINISHED, finished=False, **change)  # type: ignore[arg-type]
    assert not repeats_finished_restore(FINISHED, asked, NodeCluster(RESTORED.id, frozenset(), frozenset(), DB))


def test_a_finished_restore_is_not_repeated_once_the_node_holds_other_data() -> None:
    asked = replace(FINISHED, finished=False)
    assert not repeats_finished_restore(FINISHED, asked, NodeCluster(RESTORED.id ^ 1, frozenset(), frozenset(), DB))
    assert not repeats_finished_restore(FINISHED, asked, offline(1, 2))
    assert not repeats_finished_restore(FINISHED, asked, offline())  # data dir gone: restore again
    unfinished = replace(FINISHED, finished=False)
    assert not repeats_finished_restore(unfinished, asked, NodeCluster(RESTORED.id, frozenset(), frozenset(), DB))


def test_the_members_a_data_dir_records_are_looked_for_at_their_peer_hosts_on_the_client_port(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """etcd 3.5 keeps members' peer URLs in the db, not their client URLs: kubeadm serves
    clients on every member's host at the same port, which is where a restore asks them."""
    from lifeboat.etcdapi.model import Member
    from lifeboat.restore import identity

    db = tmp_path / "etcd" / "member" / "snap" / "db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"")
    members = [Member(1, "a", ("https://10.0.0.11:2380",), (), False),
               Member(2, "b", ("https://10.0.0.12:2380", "https://[fd00::12]:2380"), (), False),
               Member(3, "", ("https://10.0.0.11:2380",), (), True)]
    monkeypatch.setattr(identity, "read_members", lambda path: (members, []))
    assert identity.recorded_client_urls(tmp_path / "etcd", 2379) == (
        "https://10.0.0.11:2379", "https://10.0.0.12:2379", "https://[fd00::12]:2379")
    assert identity.recorded_client_urls(tmp_path / "no-etcd", 2379) == ()


def test_the_finished_restore_is_recognised_under_another_spelling_of_its_data_dir(tmp_path: Path) -> None:
    """The journal's data dir was compared as a string: the same data dir named through a symlink, or
    with a leading '//', was taken for another, and the restore went on as a new one (then refused
    the backup as another cluster's)."""
    (tmp_path / "var/lib/etcd").mkdir(parents=True)
    (tmp_path / "lib").symlink_to(tmp_path / "var/lib")
    finished = replace(FINISHED, data_dir=str(tmp_path / "var/lib/etcd"))
    node = NodeCluster(RESTORED.id, frozenset(), frozenset(), DB)
    for spelling in (tmp_path / "lib/etcd", Path("/" + str(tmp_path / "var/lib/etcd"))):
        asked = replace(finished, finished=False, data_dir=str(spelling))
        assert repeats_finished_restore(finished, asked, node), spelling
    elsewhere = replace(finished, finished=False, data_dir=str(tmp_path / "etcd"))
    assert not repeats_finished_restore(finished, elsewhere, node)

"""Moving the old data dir and files aside never replaces what another process put at the
aside name after lifeboat looked at it (a plain rename replaces an empty dir, or a file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import pytest

from lifeboat.errors import OperationFailed
from lifeboat.restore.files import install_archive
from lifeboat.restore.steps import MoveAside, PutBack, RestoreContext
from tests.unit.restore.test_restore_files import node_and_archive


def made_after_the_look(monkeypatch: pytest.MonkeyPatch, *names: Path) -> None:
    """``names`` exist, but a look at them (before the other process made them) found them free."""
    looked = os.path.lexists
    monkeypatch.setattr(os.path, "lexists", lambda path: Path(path) not in names and looked(path))


def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "etcd"
    (data / "member" / "snap").mkdir(parents=True)
    (data / "member" / "snap" / "db").write_bytes(b"the old member's db")
    return data


def test_the_data_dir_is_not_moved_over_an_aside_dir_made_after_the_look(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, aside = data_dir(tmp_path), tmp_path / "etcd.lifeboat-moved-STAMP"
    aside.mkdir()
    made_after_the_look(monkeypatch, aside)
    with pytest.raises(OperationFailed, match=r"etcd\.lifeboat-moved-STAMP already exists; move it away"):
        MoveAside("move-aside", data, aside, "moved_aside").run(cast(RestoreContext, None))
    assert (data / "member" / "snap" / "db").read_bytes() == b"the old member's db"
    assert list(aside.iterdir()) == []


def test_a_rollback_does_not_put_the_data_back_over_a_dir_made_after_the_look(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    moved, data = data_dir(tmp_path), tmp_path / "restored"
    data.mkdir()
    made_after_the_look(monkeypatch, data)
    with pytest.raises(OperationFailed, match="restored exists; move it away, then re-run the rollback"):
        PutBack("put-back", moved, data).run(cast(RestoreContext, None))
    assert (moved / "member" / "snap" / "db").read_bytes() == b"the old member's db"
    assert list(data.iterdir()) == []


def test_a_file_is_not_moved_over_an_aside_file_made_after_the_look(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node, archive = node_and_archive(tmp_path)
    ca = node.host("/etc/kubernetes/pki/ca.crt")
    aside = node.host("/etc/kubernetes/pki/ca.crt.lifeboat-moved-STAMP")
    aside.write_text("the CA another restore moved aside\n")
    ca.write_text("the CA made after that restore\n")
    made_after_the_look(monkeypatch, aside)
    with pytest.raises(OperationFailed, match=r"ca\.crt\.lifeboat-moved-STAMP already exists"):
        install_archive(archive, node.root, "STAMP")
    assert aside.read_text() == "the CA another restore moved aside\n"
    assert ca.read_text() == "the CA made after that restore\n"

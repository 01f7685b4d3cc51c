"""How the restore tells etcd is gone: its client port and bbolt's lock on the db file."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lifeboat.errors import OperationFailed
from lifeboat.restore.supervisor import ManualSupervisor, NodeLiveness, StaticPodSupervisor
from tests.support.ports import free_port


def test_none_supervisor_refuses_while_etcd_answers(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_port()))  # stays ours once closed: nothing else listens there
        listener.listen(1)
        port = listener.getsockname()[1]
        supervisor = ManualSupervisor(NodeLiveness((f"https://127.0.0.1:{port}",), tmp_path))
        with pytest.raises(OperationFailed, match="etcd is still running"):
            supervisor.stop("etcd")
    supervisor.stop("etcd")  # nothing listens any more: accepted


def test_static_pod_stop_and_start_move_the_manifest_to_the_holding_dir_and_back(tmp_path: Path) -> None:
    manifests = tmp_path / "etc/kubernetes/manifests"
    manifests.mkdir(parents=True)
    (manifests / "etcd.yaml").write_text("pod")
    supervisor = StaticPodSupervisor(tmp_path, NodeLiveness((), tmp_path / "data"))
    supervisor.stop("etcd")
    supervisor.stop("etcd")  # idempotent
    held = tmp_path / "etc/kubernetes/lifeboat-held-manifests/etcd.yaml"
    assert held.read_text() == "pod" and not (manifests / "etcd.yaml").exists()
    assert supervisor.restored_file_destination("/etc/kubernetes/manifests/etcd.yaml") == \
        "/etc/kubernetes/lifeboat-held-manifests/etcd.yaml"
    supervisor.start("etcd")
    assert (manifests / "etcd.yaml").read_text() == "pod" and not held.exists()

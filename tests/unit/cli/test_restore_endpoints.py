"""Which etcd ``lifeboat restore`` asks, and which endpoint it takes for this node's member.

Restore stops, restores and checks the member of the *first* endpoint. On a node with an etcd
static pod (in the kubelet's directory or, mid-restore, lifeboat's holding dir) that pod's
endpoint and kubeadm's client certificate win over the config file's ``etcd.*``, which an
agent's config fills with every member (the first is this node's on one node only). Only
``--endpoints``/``--cacert``/``--cert``/``--key`` or their ``$ETCDCTL_*`` variables beat the pod
(the variables did not, but ``$ETCDCTL_ENDPOINTS``).
These tests pin the precedence docs/configuration.md and docs/restore.md describe.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from lifeboat.cli.main import build_parser
from lifeboat.cli.restore import _node
from lifeboat.cli.status import held_by_a_restore, quota_from_manifest
from lifeboat.restore.journal import Journal, journal_path, load_journal, save_journal
from lifeboat.restore.supervisor import HOLDING_DIR
from tests.support.cli import Cli
from tests.support.kubeadm_node import (
    KubeadmNode, etcd_manifest, install_etcd_client_files, make_kubeadm_node, write,
)
from tests.support.pki import Pki
from tests.support.ports import free_port

EVERY_MEMBER = "etcd: {endpoints: [https://10.0.0.12:2379, https://10.0.0.11:2379, https://10.0.0.13:2379], " \
               "cacert: /etc/lifeboat/ca.crt, cert: /etc/lifeboat/client.crt, key: /etc/lifeboat/client.key}\n"


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KubeadmNode:
    for var in ("LIFEBOAT_CONFIG", "LIFEBOAT_ROOT", "ETCDCTL_ENDPOINTS", "ETCDCTL_CACERT", "ETCDCTL_CERT",
                "ETCDCTL_KEY"):
        monkeypatch.delenv(var, raising=False)
    return make_kubeadm_node(tmp_path / "host", name="cp-1", ip="10.0.0.11")


def member_endpoints(node: KubeadmNode, tmp_path: Path, *flags: str) -> tuple[tuple[str, ...], Path | None]:
    """The endpoints restore's member probe asks, and its CA."""
    config = tmp_path / "lifeboat.yaml"
    config.write_text(EVERY_MEMBER)
    args = build_parser("restore").parse_args(["restore", "latest", "--root", str(node.root), "--config",
                                               str(config), *flags])
    _target, probe, _supervisor = _node(args)
    tls = probe.settings.tls
    return tuple(probe.settings.endpoints), None if tls is None else tls.ca


def test_the_static_pods_endpoint_beats_the_config_files_list_of_every_member(
    node: KubeadmNode, tmp_path: Path,
) -> None:
    assert member_endpoints(node, tmp_path) == (("https://127.0.0.1:2379",), node.host("/etc/kubernetes/pki/etcd/ca.crt"))


def test_mid_restore_the_held_static_pod_still_names_this_nodes_member(node: KubeadmNode, tmp_path: Path) -> None:
    held = node.host(f"{HOLDING_DIR}/etcd.yaml")
    held.parent.mkdir(parents=True)
    node.host("/etc/kubernetes/manifests/etcd.yaml").rename(held)
    assert member_endpoints(node, tmp_path, "--supervisor", "kubeadm")[0] == ("https://127.0.0.1:2379",)


def test_endpoints_given_on_the_command_line_or_in_etcdctls_variable_beat_the_static_pod(
    node: KubeadmNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert member_endpoints(node, tmp_path, "--endpoints", "https://10.0.0.11:2379")[0] == ("https://10.0.0.11:2379",)
    monkeypatch.setenv("ETCDCTL_ENDPOINTS", "https://10.0.0.11:2379,https://10.0.0.12:2379")
    assert member_endpoints(node, tmp_path)[0] == ("https://10.0.0.11:2379",)


@pytest.mark.parametrize(("flag", "variable"), [("--cacert", "ETCDCTL_CACERT"), ("--cert", "ETCDCTL_CERT"),
                                               ("--key", "ETCDCTL_KEY")])
def test_a_certificate_given_on_the_command_line_or_in_etcdctls_variable_beats_the_static_pod(
    node: KubeadmNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str, variable: str,
) -> None:
    # As for every other command: a certificate set, not the kubeadm manifest, decides; etcd is
    # then the one the file names (its first endpoint for this node), with the file's CA unless set.
    by_flag = member_endpoints(node, tmp_path, f"{flag}=/etc/mine/{variable}")
    monkeypatch.setenv(variable, f"/etc/mine/{variable}")
    by_variable = member_endpoints(node, tmp_path)
    assert by_flag == by_variable == (
        ("https://10.0.0.12:2379",),
        Path("/etc/mine/ETCDCTL_CACERT" if variable == "ETCDCTL_CACERT" else "/etc/lifeboat/ca.crt"),
    )


def test_without_a_static_pod_the_config_files_first_endpoint_is_taken_for_this_node(
    node: KubeadmNode, tmp_path: Path,
) -> None:
    node.host("/etc/kubernetes/manifests/etcd.yaml").unlink()
    endpoints, ca = member_endpoints(node, tmp_path, "--supervisor", "none", "--name", "cp-1", "--data-dir",
                                     "/var/lib/etcd", "--initial-cluster", "cp-1=https://10.0.0.11:2380")
    assert (endpoints, ca) == (("https://10.0.0.12:2379",), Path("/etc/lifeboat/ca.crt"))


@pytest.mark.parametrize("output", ["table", "json"])
def test_status_of_a_node_whose_restore_did_not_finish_says_so(cli: Cli, tmp_path: Path, output: str) -> None:
    """The restore holds etcd's manifest aside while it works: status, run then, found no etcd
    and recommended a restore plan, saying nothing of the restore to resume or roll back."""
    held = tmp_path / "etc/kubernetes/lifeboat-held-manifests/etcd.yaml"
    held.parent.mkdir(parents=True)
    held.write_text("apiVersion: v1\nkind: Pod\n")
    code, out, _err = cli("status", "--root", str(tmp_path), "--endpoints", "127.0.0.1:1", "-o", output)
    assert code == 2
    said = json.loads(out)["unfinished_restore"] if output == "json" else out
    assert f"held at {held}" in said and "'lifeboat restore --rollback'" in said
    held.unlink()  # nothing held: nothing said
    code, out, _err = cli("status", "--root", str(tmp_path), "--endpoints", "127.0.0.1:1", "-o", "json")
    assert json.loads(out)["unfinished_restore"] is None


def test_status_mid_restore_asks_this_nodes_member_named_by_the_held_static_pod(
    node: KubeadmNode, cli: Cli, pki: Pki,
) -> None:
    """With etcd's manifest held aside by a restore, status found no static pod and asked etcd's
    default endpoint (127.0.0.1:2379, no TLS) instead of this node's member, and read the quota
    from nowhere."""
    port = free_port()
    install_etcd_client_files(node, pki.ca, pki.client.cert, pki.client.key,
                              "/etc/kubernetes/pki/etcd/healthcheck-client")
    manifest = etcd_manifest("cp-1", listen=f"https://127.0.0.1:{port}", advertise=f"https://10.0.0.11:{port}",
                             peer="https://10.0.0.11:2380")
    held = node.host(f"{HOLDING_DIR}/etcd.yaml")
    write(held, manifest.replace("- --name=", "- --quota-backend-bytes=8589934592\n    - --name="), 0o600)
    node.host("/etc/kubernetes/manifests/etcd.yaml").unlink()
    code, out, _err = cli("status", "--root", str(node.root), "-o", "json")
    assert code == 2
    asked = " ".join(json.loads(out)["endpoint_failures"])
    # etcd's default port named nowhere but inside this member's (a free port may be 32379 or 23790).
    assert f"127.0.0.1:{port}" in asked and "2379" not in asked.replace(str(port), ""), asked
    assert quota_from_manifest(node.root) == 8589934592  # the db sizes are compared with the pod's quota


def test_status_says_a_restore_holds_kube_apiserver_while_etcd_runs_again(node: KubeadmNode, cli: Cli) -> None:
    """A restore stopped after it started etcd but before kube-apiserver: etcd's manifest is back
    in place, kube-apiserver's still held, and status said nothing of the restore."""
    held = node.host(f"{HOLDING_DIR}/kube-apiserver.yaml")
    held.parent.mkdir(parents=True)
    node.host("/etc/kubernetes/manifests/kube-apiserver.yaml").rename(held)
    code, out, _err = cli("status", "--root", str(node.root), "--endpoints", "127.0.0.1:1", "-o", "json")
    said = json.loads(out)["unfinished_restore"]
    assert said is not None and f"kube-apiserver's static pod manifest is held at {held}" in said, said


def test_status_says_a_journaled_restore_of_this_nodes_data_dir_did_not_finish(node: KubeadmNode, cli: Cli) -> None:
    """Killed while it checked the started member, a restore leaves every manifest in place and
    its journal unfinished: status said nothing of it."""
    path = journal_path(node.host("/var/lib/etcd"))
    save_journal(path, Journal("20240101T000000Z-abcdef", "prod", str(node.host("/var/lib/etcd")), "cp-1",
                               "cp-1=https://10.0.0.11:2380", "tok", "20240102T030405Z",
                               done=("preflight", "fetch-snapshot", "stop:etcd", "move-aside", "restore-data",
                                     "put-in-place", "start:etcd"), node_changed=True))
    code, out, _err = cli("status", "--root", str(node.root), "--endpoints", "127.0.0.1:1", "-o", "json")
    said = json.loads(out)["unfinished_restore"]
    assert said is not None and f"journaled in {path}" in said and "--rollback" in said, said
    save_journal(path, replace(load_journal(path), finished=True))  # type: ignore[type-var]
    code, out, _err = cli("status", "--root", str(node.root), "--endpoints", "127.0.0.1:1", "-o", "json")
    assert json.loads(out)["unfinished_restore"] is None


def test_status_does_not_hang_on_a_fifo_planted_at_the_journals_name(node: KubeadmNode) -> None:
    """status read the journal with a plain open: a FIFO there (whoever may write the data dir's
    parent can make one) blocked it for ever."""
    fifo = journal_path(node.host("/var/lib/etcd"))
    os.mkfifo(fifo)
    said: list[str | None] = []
    looking = threading.Thread(target=lambda: said.append(held_by_a_restore(node.root)), daemon=True)
    looking.start()
    looking.join(10)
    try:
        assert not looking.is_alive() and said == [None]
    finally:
        if looking.is_alive():  # release the reader the unfixed code leaves blocked
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("how", ["another-users", "writable-by-others", "symlink"])
def test_status_reports_no_journal_lifeboat_could_not_have_written(node: KubeadmNode, tmp_path: Path, how: str) -> None:
    """status printed whatever journal it found beside the data dir as lifeboat's own words: one
    planted by whoever may write the data dir's parent put its text (terminal escapes) in root's
    status output and claimed an unfinished restore."""
    path = journal_path(node.host("/var/lib/etcd"))
    save_journal(path, Journal("\x1b]0;owned\x07", "prod", str(node.host("/var/lib/etcd")), "cp-1",
                               "cp-1=https://10.0.0.11:2380", "tok", "20240102T030405Z",
                               done=("preflight", "move-aside"), node_changed=True))
    if how == "another-users":
        os.chown(path, 4242, 4242)
    elif how == "writable-by-others":
        path.chmod(0o666)
    else:
        path.rename(tmp_path / "elsewhere.json")
        path.symlink_to(tmp_path / "elsewhere.json")
    assert held_by_a_restore(node.root) is None

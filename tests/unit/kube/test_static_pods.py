"""Reading kubeadm static pods: flags, etcd discovery, kube-apiserver flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lifeboat.errors import UsageError
from lifeboat.kube.static_pods import (
    apiserver_flags,
    etcd_endpoint_from_manifest,
    etcd_version_from_image,
    parse_flags,
    read_static_pod,
)
from tests.support.kubeadm_node import KubeadmNode, etcd_manifest, make_kubeadm_node, write


@pytest.fixture
def node(tmp_path: Path) -> KubeadmNode:
    return make_kubeadm_node(tmp_path / "node")


def test_flags_in_equals_and_space_forms_are_both_read() -> None:
    flags = parse_flags(["--data-dir=/var/lib/etcd", "--name", "cp-1", "-snapshot-count", "10000"])
    assert flags.value("data-dir") == "/var/lib/etcd"
    assert flags.value("name") == "cp-1"
    assert flags.value("snapshot-count") == "10000"


def test_bare_boolean_flag_is_present_without_value() -> None:
    flags = parse_flags(["--client-cert-auth", "--name=cp-1"])
    assert "client-cert-auth" in flags
    assert flags.value("client-cert-auth") is None
    assert flags.value("name") == "cp-1"
    assert "missing" not in flags


def test_repeated_flag_keeps_every_value_and_last_wins() -> None:
    flags = parse_flags(["--tls-cipher-suites=A,B", "--tls-cipher-suites", "C", "--x=", "--y=a=b"])
    assert flags.values("tls-cipher-suites") == ("A,B", "C")
    assert flags.list("tls-cipher-suites") == ("A", "B", "C")
    assert flags.value("tls-cipher-suites") == "C"
    assert flags.value("x") == ""
    assert flags.value("y") == "a=b"


def test_words_after_double_dash_are_not_flags() -> None:
    assert "later" not in parse_flags(["--a=1", "--", "--later=2"])


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("registry.k8s.io/etcd:3.5.9-0", "3.5.9"),
        ("registry.k8s.io/etcd:3.5.12-0@sha256:" + "a" * 64, "3.5.12"),
        ("gcr.io/etcd-development/etcd:v3.4.27", "3.4.27"),
        ("localhost:5000/etcd:3.5.1", "3.5.1"),
        ("localhost:5000/etcd", None),
        ("registry.k8s.io/etcd:latest", None),
        ("registry.k8s.io/etcd@sha256:" + "b" * 64, None),
    ],
)
def test_etcd_version_comes_from_the_image_tag(image: str, version: str | None) -> None:
    assert etcd_version_from_image(image) == version


def test_kubeadm_etcd_manifest_gives_loopback_endpoint_ca_and_healthcheck_cert(node: KubeadmNode) -> None:
    found = etcd_endpoint_from_manifest(node.root)
    assert found is not None
    assert found.endpoints == ("https://127.0.0.1:2379",)
    assert found.advertise_client_urls == ("https://10.0.0.11:2379",)
    assert found.ca == node.host("/etc/kubernetes/pki/etcd/ca.crt")
    assert found.cert == node.host("/etc/kubernetes/pki/etcd/healthcheck-client.crt")
    assert found.key == node.host("/etc/kubernetes/pki/etcd/healthcheck-client.key")
    assert found.data_dir == node.host("/var/lib/etcd")
    assert found.name == "cp-1"
    assert found.initial_cluster == "cp-1=https://10.0.0.11:2380"
    assert found.initial_advertise_peer_urls == ("https://10.0.0.11:2380",)
    assert found.initial_cluster_state is None
    assert found.image == "registry.k8s.io/etcd:3.5.12-0"
    assert found.version == "3.5.12"


def test_apiserver_etcd_client_is_the_fallback_cert(node: KubeadmNode) -> None:
    node.host("/etc/kubernetes/pki/etcd/healthcheck-client.key").unlink()
    found = etcd_endpoint_from_manifest(node.root)
    assert found is not None
    assert found.cert == node.host("/etc/kubernetes/pki/apiserver-etcd-client.crt")
    assert found.key == node.host("/etc/kubernetes/pki/apiserver-etcd-client.key")


def test_no_client_cert_on_the_node_leaves_cert_and_key_empty(node: KubeadmNode) -> None:
    node.host("/etc/kubernetes/pki/etcd/healthcheck-client.crt").unlink()
    node.host("/etc/kubernetes/pki/apiserver-etcd-client.key").unlink()
    found = etcd_endpoint_from_manifest(node.root)
    assert found is not None
    assert (found.cert, found.key) == (None, None)


def test_advertised_urls_are_used_when_nothing_listens_on_loopback(node: KubeadmNode) -> None:
    write(
        node.host("/etc/kubernetes/manifests/etcd.yaml"),
        etcd_manifest(
            "cp-1", listen="https://10.0.0.11:2379", advertise="https://10.0.0.11:2379,https://cp-1.lan:2379",
            peer="https://10.0.0.11:2380",
        ),
    )
    found = etcd_endpoint_from_manifest(node.root)
    assert found is not None
    assert found.endpoints == ("https://10.0.0.11:2379", "https://cp-1.lan:2379")


def test_wildcard_listener_is_reached_over_loopback(node: KubeadmNode) -> None:
    write(
        node.host("/etc/kubernetes/manifests/etcd.yaml"),
        etcd_manifest("cp-1", listen="https://0.0.0.0:2379", advertise="https://10.0.0.11:2379", peer="https://x:2380"),
    )
    found = etcd_endpoint_from_manifest(node.root)
    assert found is not None
    assert found.endpoints == ("https://127.0.0.1:2379",)


def test_missing_etcd_manifest_means_no_discovery(tmp_path: Path) -> None:
    assert etcd_endpoint_from_manifest(tmp_path) is None
    assert apiserver_flags(tmp_path) is None


def test_unparseable_manifest_is_a_usage_error_naming_the_file(node: KubeadmNode) -> None:
    manifest = write(node.host("/etc/kubernetes/manifests/etcd.yaml"), "spec:\n  containers: [\n  - {oops")
    with pytest.raises(UsageError, match=str(manifest)):
        etcd_endpoint_from_manifest(node.root)


def test_yaml_that_is_not_a_pod_is_a_usage_error(node: KubeadmNode) -> None:
    write(node.host("/etc/kubernetes/manifests/etcd.yaml"), "kind: Deployment\nspec: {}\n")
    with pytest.raises(UsageError, match="kind: Pod"):
        etcd_endpoint_from_manifest(node.root)


def test_container_paths_map_back_through_host_path_volumes(tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "etcd.yaml",
        """\
kind: Pod
spec:
  containers:
  - name: sidecar
    command: [sleep]
  - name: etcd
    command: [etcd]
    args: ["--data-dir", "/data/member", "--trusted-ca-file=/certs/ca.crt"]
    volumeMounts:
    - {name: data, mountPath: /data}
    - {name: certs, mountPath: /certs}
  volumes:
  - {name: data, hostPath: {path: /srv/etcd}}
  - {name: certs, hostPath: {path: /etc/etcd/pki}}
""",
    )
    pod = read_static_pod(manifest, container="etcd")
    assert pod is not None
    assert pod.container == "etcd"
    assert pod.flags.value("data-dir") == "/data/member"
    assert pod.host_path("/data/member") == "/srv/etcd/member"
    assert pod.host_path("/certs/ca.crt") == "/etc/etcd/pki/ca.crt"
    assert pod.host_path("/database") == "/database"


def test_apiserver_flags_name_the_encryption_config_under_root(node: KubeadmNode) -> None:
    flags = apiserver_flags(node.root)
    assert flags is not None
    assert flags.encryption_provider_config == node.host("/etc/kubernetes/enc/enc.yaml")
    assert flags.etcd_servers == ("https://127.0.0.1:2379",)
    assert flags.etcd_cafile == node.host("/etc/kubernetes/pki/etcd/ca.crt")
    assert flags.etcd_certfile == node.host("/etc/kubernetes/pki/apiserver-etcd-client.crt")
    assert flags.etcd_keyfile == node.host("/etc/kubernetes/pki/apiserver-etcd-client.key")
    assert flags.flags.value("secure-port") == "6443"


def test_dotdot_in_a_manifest_path_cannot_leave_the_root(node: KubeadmNode) -> None:
    text = node.host("/etc/kubernetes/manifests/etcd.yaml").read_text()
    write(
        node.host("/etc/kubernetes/manifests/etcd.yaml"),
        text.replace("--data-dir=/var/lib/etcd", "--data-dir=/../../../var/lib/etcd"),
    )
    found = etcd_endpoint_from_manifest(node.root)
    assert found is not None and found.data_dir == node.host("/var/lib/etcd")
    assert os.path.commonpath([found.data_dir, node.root]) == str(node.root)


def test_a_static_pod_manifest_that_is_a_fifo_or_huge_is_refused_unread(tmp_path: Path) -> None:
    """It was read whole whatever it was: a FIFO hung every command that reads it, /dev/zero
    took the machine's memory."""
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="is not a regular file"):
        read_static_pod(fifo)
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"#" * (2 << 20))
    with pytest.raises(UsageError, match="larger than"):
        read_static_pod(huge)
    assert read_static_pod(tmp_path / "absent.yaml") is None


def _laughs(levels: int) -> str:
    """A kube-apiserver manifest whose command holds YAML aliases, each a list of nine of the one before."""
    lines = ["kind: Pod", "spec:", "  containers:", "  - name: kube-apiserver", "    command:",
             "    - kube-apiserver", "    - --encryption-provider-config=/etc/kubernetes/enc/enc.yaml",
             "    - &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"    - &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, levels)]
    lines += [f"    volumeMounts: [{{name: *l{levels - 1}, mountPath: /x}}]", f"    image: *l{levels - 1}"]
    return "\n".join(lines) + "\n"


def test_a_manifest_of_nested_yaml_aliases_is_read_at_once(tmp_path: Path) -> None:
    """str() of a command word, the image or a volume name made of nested aliases (a "billion
    laughs") never ended: a forged kube-apiserver manifest in a backup's archive (restore --files
    reads it for the encryption config it names) hung lifeboat, and so did one restored on a node."""
    manifest = write(tmp_path / "kube-apiserver.yaml", _laughs(10))
    script = ("import sys; from pathlib import Path; from lifeboat.kube.static_pods import read_static_pod; "
              "pod = read_static_pod(Path(sys.argv[1]), container='kube-apiserver'); "
              "print(pod.flags.value('encryption-provider-config'))")
    done = subprocess.run([sys.executable, "-c", script, str(manifest)], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0 and done.stdout.strip() == "/etc/kubernetes/enc/enc.yaml", done.stderr

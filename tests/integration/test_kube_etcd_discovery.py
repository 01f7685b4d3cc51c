"""Discovery from a kubeadm etcd manifest reaches a real etcd over mTLS with the stock etcdctl."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lifeboat.kube.static_pods import EtcdDiscovery, etcd_endpoint_from_manifest
from tests.support.binaries import EtcdRelease
from tests.support.etcd import EtcdCluster
from tests.support.kubeadm_node import etcd_manifest, install_etcd_client_files, make_kubeadm_node, write
from tests.support.pki import Pki

pytestmark = pytest.mark.integration


def endpoint_health(
    release: EtcdRelease, found: EtcdDiscovery, timeout: str = "5s"
) -> subprocess.CompletedProcess[str]:
    assert found.ca and found.cert and found.key
    return subprocess.run(
        [
            str(release.etcdctl), f"--endpoints={','.join(found.endpoints)}", f"--cacert={found.ca}",
            f"--cert={found.cert}", f"--key={found.key}", f"--command-timeout={timeout}", "endpoint", "health",
        ],
        capture_output=True, text=True, env=dict(os.environ, ETCDCTL_API="3"), timeout=30,
    )


def test_discovered_endpoint_ca_and_client_cert_pass_etcdctl_health(
    release: EtcdRelease, pki: Pki, other_pki: Pki, tmp_path: Path
) -> None:
    node = make_kubeadm_node(tmp_path / "node")
    with EtcdCluster(release, tmp_path / "etcd", pki=pki) as cluster:
        member = cluster.first()
        # As kubeadm writes it: loopback plus the node address, which is not reachable here.
        write(
            node.host("/etc/kubernetes/manifests/etcd.yaml"),
            etcd_manifest(
                member.name,
                listen=f"{member.client_url},https://{node.ip}:{member.client_port}",
                advertise=f"https://{node.ip}:{member.client_port}",
                peer=member.peer_url,
                image=f"registry.k8s.io/etcd:{release.version}-0",
            ),
            0o600,
        )
        install_etcd_client_files(
            node, pki.ca, pki.client.cert, pki.client.key, "/etc/kubernetes/pki/etcd/healthcheck-client"
        )
        found = etcd_endpoint_from_manifest(node.root)
        assert found is not None
        assert found.endpoints == (member.client_url,)
        assert found.version == release.version
        healthy = endpoint_health(release, found)
        assert healthy.returncode == 0, healthy.stderr
        assert "is healthy" in healthy.stdout + healthy.stderr

        # Without healthcheck-client, kubeadm's apiserver-etcd-client is used.
        node.host("/etc/kubernetes/pki/etcd/healthcheck-client.crt").unlink()
        install_etcd_client_files(
            node, pki.ca, pki.client.cert, pki.client.key, "/etc/kubernetes/pki/apiserver-etcd-client"
        )
        found = etcd_endpoint_from_manifest(node.root)
        assert found is not None and found.cert == node.host("/etc/kubernetes/pki/apiserver-etcd-client.crt")
        healthy = endpoint_health(release, found)
        assert healthy.returncode == 0, healthy.stderr

        # The health check does use the discovered cert: one from another CA is refused.
        install_etcd_client_files(
            node, pki.ca, other_pki.client.cert, other_pki.client.key, "/etc/kubernetes/pki/apiserver-etcd-client"
        )
        assert endpoint_health(release, found, timeout="1s").returncode != 0

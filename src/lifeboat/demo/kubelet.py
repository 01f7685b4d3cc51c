"""The demo's stand-in for a node's kubelet: runs what the static-pod manifests ask for.

Like the kubelet's static-pod loop, it looks at ``/etc/kubernetes/manifests`` under the node
root: ``etcd.yaml`` there means etcd should run (it is started, and restarted if it dies);
no ``etcd.yaml`` means it should not. kube-apiserver is played by a socket listening on its
``--secure-port`` while ``kube-apiserver.yaml`` is there. This is what lets ``lifeboat
restore`` stop and start them by moving manifests, exactly as on a real kubeadm node.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from lifeboat.etcd.local import LocalEtcd


class DemoKubelet:
    """A thread reconciling one node every 100 ms; ``down()`` plays a dead node."""

    def __init__(self, root: Path, etcd: LocalEtcd, apiserver_port: int) -> None:
        manifests = root / "etc/kubernetes/manifests"
        self.etcd_manifest = manifests / "etcd.yaml"
        self.apiserver_manifest = manifests / "kube-apiserver.yaml"
        self.etcd = etcd
        self.apiserver_port = apiserver_port
        self.apiserver: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def up(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"kubelet-{self.etcd.name}", daemon=True)
        self._thread.start()

    def down(self) -> None:
        """The node dies: its kubelet stops, and etcd and kube-apiserver with it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.etcd.stop()
        self._apiserver(False)

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            wanted = self.etcd_manifest.exists()
            if wanted and not self.etcd.running:
                self.etcd.start()
            elif self.etcd.running and not wanted:
                self.etcd.stop()
            self._apiserver(self.apiserver_manifest.exists())

    def _apiserver(self, wanted: bool) -> None:
        if wanted and self.apiserver is None:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.apiserver_port))
            sock.listen()
            self.apiserver = sock
        elif not wanted and self.apiserver is not None:
            self.apiserver.close()
            self.apiserver = None

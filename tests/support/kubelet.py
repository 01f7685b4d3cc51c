"""A stand-in for the kubelet's static-pod loop: runs etcd (and a fake kube-apiserver) while their manifests exist.

Like the kubelet, it polls ``/etc/kubernetes/manifests`` under a node root: when ``etcd.yaml``
appears it starts the real etcd member, when it disappears it stops it. kube-apiserver is
played by a listening socket on the manifest's ``--secure-port``.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from .etcd import EtcdMember


class FakeKubelet:
    """A thread that reconciles the manifests dir every 50 ms; a context manager that cleans up."""

    def __init__(self, root: Path, etcd: EtcdMember, initial_cluster: str, token: str,
                 apiserver_port: int | None = None) -> None:
        self.manifests = root / "etc/kubernetes/manifests"
        self.etcd = etcd
        self.initial_cluster = initial_cluster
        self.token = token
        self.apiserver_port = apiserver_port
        self.apiserver: socket.socket | None = None
        self.etcd_starts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fake-kubelet", daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> FakeKubelet:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.etcd.stop()
        if self.apiserver is not None:
            self.apiserver.close()

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self._reconcile()
            except Exception as exc:  # a test reads errors; the loop must go on like the kubelet's
                self.errors.append(repr(exc))

    def _reconcile(self) -> None:
        running = self.etcd.process is not None and self.etcd.process.poll() is None
        wanted = (self.manifests / "etcd.yaml").exists()
        if wanted and not running:
            self.etcd.start(self.initial_cluster, self.token)
            self.etcd_starts += 1
        elif running and not wanted:
            self.etcd.stop()
        if self.apiserver_port is None:
            return
        api_wanted = (self.manifests / "kube-apiserver.yaml").exists()
        if api_wanted and self.apiserver is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.apiserver_port))
            sock.listen(8)
            self.apiserver = sock
        elif not api_wanted and self.apiserver is not None:
            self.apiserver.close()
            self.apiserver = None

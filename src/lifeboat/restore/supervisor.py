"""Stopping and starting etcd and kube-apiserver: kubeadm static pods, systemd units, or the operator.

How lifeboat knows etcd is gone (every supervisor): nothing accepts a TCP connection on
any of its client URLs, *and* the data dir's bbolt file ``member/snap/db`` is not locked.
bbolt takes an exclusive ``flock`` on the db file for as long as a writer has it open
(bbolt's ``flock`` in bolt_unix.go), so a free lock means no etcd is using that data dir,
even one that stopped listening but has not exited yet. kube-apiserver is gone when
nothing accepts a connection on its secure port.

:class:`MemorySupervisor` is the in-memory double for unit tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit

from lifeboat.clock import Clock, SystemClock
from lifeboat.durable import fsync_dir
from lifeboat.errors import OperationFailed, UsageError
from lifeboat.etcd.data_dir import db_locked
from lifeboat.kube.paths import APISERVER_MANIFEST, ETCD_MANIFEST, on_host
from lifeboat.waits import run_captured

Component = Literal["etcd", "kube-apiserver"]
HOLDING_DIR = "/etc/kubernetes/lifeboat-held-manifests"
_MANIFESTS: dict[Component, str] = {"etcd": ETCD_MANIFEST, "kube-apiserver": APISERVER_MANIFEST}


def manifest_paths(root: Path, component: Component) -> tuple[Path, Path]:
    """Where ``component``'s static pod manifest is on the host under ``root``: the kubelet's
    (``live``) and, while a restore holds it stopped, the holding dir's (``held``)."""
    manifest = _MANIFESTS[component]
    return on_host(root, manifest), on_host(root, f"{HOLDING_DIR}/{Path(manifest).name}")


class Supervisor(Protocol):
    """What the restore needs from whatever runs etcd and kube-apiserver on this node."""

    kind: str
    # False: stop() only checks that the operator stopped it (--supervisor none).
    stops_by_itself: bool

    def manages(self, component: Component) -> bool:
        """Whether this supervisor can stop and start ``component`` (else the operator must)."""

    def describe_stop(self, component: Component) -> str: ...

    def describe_start(self, component: Component) -> str: ...

    def start_hint(self, component: Component) -> str:
        """How the operator starts ``component`` by hand (``restore --no-start`` prints it)."""

    def stop(self, component: Component) -> None:
        """Ask for ``component`` to stop; idempotent. Does not wait."""

    def start(self, component: Component) -> None:
        """Ask for ``component`` to start; idempotent. Does not wait."""

    def is_running(self, component: Component) -> bool: ...

    def wait_stopped(self, component: Component, timeout: float) -> None:
        """Return once ``component`` is gone; OperationFailed after ``timeout`` seconds."""

    def wait_started(self, component: Component, timeout: float) -> None:
        """Return once ``component`` accepts connections; OperationFailed after ``timeout``."""

    def restored_file_destination(self, host_path: str) -> str:
        """Where a restored control-plane file goes while its component is held stopped."""


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class NodeLiveness:
    """Whether etcd and kube-apiserver run on this node, from ports and the db lock."""

    etcd_client_urls: tuple[str, ...]
    data_dir: Path
    apiserver_port: int | None = None

    def is_running(self, component: Component) -> bool:
        if component == "kube-apiserver":
            return self.apiserver_port is not None and port_answers("127.0.0.1", self.apiserver_port)
        for url in self.etcd_client_urls:
            parts = urlsplit(url if "://" in url else "//" + url)
            if parts.hostname and parts.port and port_answers(parts.hostname, parts.port):
                return True
        return db_locked(self.data_dir)

    def where(self, component: Component) -> str:
        if component == "kube-apiserver":
            return f"port {self.apiserver_port}"
        return f"{','.join(self.etcd_client_urls)} or the lock on {self.data_dir}/member/snap/db"


class NodeSupervisor:
    """What the supervisors of a real node share: whether a component runs comes from
    :class:`NodeLiveness`, the waits poll it, and restored files go where they belong."""

    # A poll is a loopback connect and a flock: cheap. The node is down between the stop and the
    # start, so every 50 ms of a wait that overruns is downtime.
    poll_interval = 0.05
    clock: Clock = SystemClock()
    stops_by_itself = True

    def __init__(self, liveness: NodeLiveness) -> None:
        self.liveness = liveness

    def is_running(self, component: Component) -> bool:
        return self.liveness.is_running(component)

    def restored_file_destination(self, host_path: str) -> str:
        return host_path

    def wait_stopped(self, component: Component, timeout: float) -> None:
        if not self._wait(component, False, timeout):
            raise OperationFailed(f"{component} is still running {timeout:.0f}s after it was stopped; "
                                  "stop it by hand, then re-run the restore")

    def wait_started(self, component: Component, timeout: float) -> None:
        if not self._wait(component, True, timeout):
            raise OperationFailed(f"{component} did not start within {timeout:.0f}s; check its logs")

    def _wait(self, component: Component, running: bool, timeout: float) -> bool:
        return self.clock.wait_until(lambda: self.is_running(component) == running, timeout, self.poll_interval)


class StaticPodSupervisor(NodeSupervisor):
    """kubeadm: the kubelet runs what ``/etc/kubernetes/manifests`` holds.

    Stopping moves the component's manifest into a holding dir beside it (same filesystem,
    so a rename; outside the directory the kubelet watches); starting moves it back.
    """

    kind = "kubeadm"

    def __init__(self, root: Path, liveness: NodeLiveness) -> None:
        super().__init__(liveness)
        self.root = root

    def _paths(self, component: Component) -> tuple[Path, Path]:
        return manifest_paths(self.root, component)

    def manages(self, component: Component) -> bool:
        live, held = self._paths(component)
        return live.exists() or held.exists()

    def describe_stop(self, component: Component) -> str:
        return f"stop {component}: move {_MANIFESTS[component]} to {HOLDING_DIR}/ and wait until it is gone"

    def describe_start(self, component: Component) -> str:
        return f"start {component}: move its manifest back from {HOLDING_DIR}/ and wait until it answers"

    def start_hint(self, component: Component) -> str:
        live, held = self._paths(component)
        return f"mv {held} {live}"

    def stop(self, component: Component) -> None:
        live, held = self._paths(component)
        if not live.exists():
            if held.exists():
                return
            raise UsageError(f"no static-pod manifest {live} to stop {component} with")
        if held.exists():
            raise OperationFailed(f"{held} already exists; move one of {live} and {held} away, then re-run")
        held.parent.mkdir(mode=0o700, exist_ok=True)
        os.replace(live, held)
        fsync_dir(held.parent)
        fsync_dir(live.parent)

    def start(self, component: Component) -> None:
        live, held = self._paths(component)
        if not held.exists():
            return
        if live.exists():
            raise OperationFailed(f"both {live} and {held} exist; keep one, then re-run")
        os.replace(held, live)
        fsync_dir(live.parent)

    def restored_file_destination(self, host_path: str) -> str:
        for component, manifest in _MANIFESTS.items():
            held = self._paths(component)[1]
            if host_path == manifest and held.exists():
                return f"{HOLDING_DIR}/{Path(manifest).name}"
        return host_path


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        # systemctl stop waits for the unit to stop (up to its TimeoutStopSec, 90 s by default).
        return run_captured(argv, 120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OperationFailed(f"{' '.join(argv)} failed: {exc}") from None


class SystemdSupervisor(NodeSupervisor):
    """etcd (and optionally kube-apiserver) as systemd units: ``systemctl stop/start UNIT``."""

    kind = "systemd"

    def __init__(self, units: Mapping[Component, str], liveness: NodeLiveness,
                 run: Runner = run_command) -> None:
        super().__init__(liveness)
        self.units = dict(units)
        self.run = run

    def manages(self, component: Component) -> bool:
        return component in self.units

    def describe_stop(self, component: Component) -> str:
        return f"stop {component}: systemctl stop {self.units[component]} and wait until it is gone"

    def describe_start(self, component: Component) -> str:
        return f"start {component}: systemctl start {self.units[component]} and wait until it answers"

    def start_hint(self, component: Component) -> str:
        return f"systemctl start {self.units[component]}"

    def _systemctl(self, verb: str, component: Component) -> None:
        done = self.run(["systemctl", verb, self.units[component]])
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise OperationFailed(f"systemctl {verb} {self.units[component]} failed: "
                                  f"{detail[-1] if detail else 'exit ' + str(done.returncode)}")

    def stop(self, component: Component) -> None:
        self._systemctl("stop", component)

    def start(self, component: Component) -> None:
        self._systemctl("start", component)


class ManualSupervisor(NodeSupervisor):
    """``--supervisor none``: the operator stops and starts etcd; lifeboat only checks."""

    kind = "none"
    stops_by_itself = False

    def manages(self, component: Component) -> bool:
        return component == "etcd"

    def describe_stop(self, component: Component) -> str:
        return f"check that {component} is stopped (you stop it; lifeboat refuses while it answers)"

    def describe_start(self, component: Component) -> str:
        return f"you start {component} now (--supervisor none); lifeboat waits for it to answer"

    def start_hint(self, component: Component) -> str:
        return (f"start {component} the way this node runs it, on {self.liveness.data_dir} (etcd ignores "
                "--initial-cluster* flags for a data dir that already holds a member)")

    def stop(self, component: Component) -> None:
        if self.is_running(component):
            raise OperationFailed(
                f"{component} is still running ({self.liveness.where(component)} answers or is "
                "locked); stop it yourself, or pass --supervisor kubeadm|systemd"
            )

    def start(self, component: Component) -> None:
        return None

    def wait_stopped(self, component: Component, timeout: float) -> None:
        self.stop(component)


@dataclass
class MemorySupervisor:
    """In-memory double: records every call; ``fail_start`` makes a component never start."""

    kind: str = "memory"
    stops_by_itself: bool = True
    running: set[str] = field(default_factory=lambda: {"etcd", "kube-apiserver"})
    managed: frozenset[str] = frozenset({"etcd", "kube-apiserver"})
    fail_start: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    def manages(self, component: Component) -> bool:
        return component in self.managed

    def describe_stop(self, component: Component) -> str:
        return f"stop {component}"

    def describe_start(self, component: Component) -> str:
        return f"start {component}"

    def start_hint(self, component: Component) -> str:
        return f"start {component} by hand"

    def stop(self, component: Component) -> None:
        self.calls.append(f"stop {component}")
        self.running.discard(component)

    def start(self, component: Component) -> None:
        self.calls.append(f"start {component}")
        if component not in self.fail_start:
            self.running.add(component)

    def is_running(self, component: Component) -> bool:
        return component in self.running

    def wait_stopped(self, component: Component, timeout: float) -> None:
        if component in self.running:
            raise OperationFailed(f"{component} is still running")

    def wait_started(self, component: Component, timeout: float) -> None:
        if component not in self.running:
            raise OperationFailed(f"{component} did not start within {timeout:.0f}s; check its logs")

    def restored_file_destination(self, host_path: str) -> str:
        return host_path


"""A known history for capture tests: puts, deletes, multi-op transactions, lease-attached keys."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lifeboat.backup.pipeline import BackupOptions
from lifeboat.capture import Capture, CaptureOptions, CaptureStatus
from lifeboat.catalog.repository import BackupRepository
from lifeboat.etcd import Delete, EtcdClient, Put
from lifeboat.store import open_store


@dataclass
class History:
    """Revisions written, in order, with what each one did."""

    revisions: list[int] = field(default_factory=list)
    leases: list[int] = field(default_factory=list)


def write_history(client: EtcdClient, rounds: int, tag: str = "r") -> History:
    """Each round: two puts, an overwrite, a 3-op transaction, a lease key, a delete, a range delete."""
    history = History()
    lease = client.lease_grant(600)
    history.leases.append(lease)
    for i in range(rounds):
        base = f"/registry/{tag}/{i:04d}"
        history.revisions.append(client.put(f"{base}/a", f"a{i}".encode()))
        history.revisions.append(client.put(f"{base}/b", b"\x00\xffbinary" * (i % 5 + 1)))
        history.revisions.append(client.put(f"{base}/a", f"a{i}-v2".encode()))
        result = client.txn([], [Put(f"{base}/t1", b"one"), Put(f"{base}/t2", b"two"), Delete(f"{base}/b")])
        history.revisions.append(result.revision)
        history.revisions.append(client.put(f"{base}/leased", b"ephemeral", lease=lease))
        client.delete_range(f"{base}/t1")
        history.revisions.append(client.range(b"\0", b"\0", limit=1).revision)
        if i % 3 == 2:
            client.delete_range(f"/registry/{tag}/{i - 1:04d}/", prefix=True)
            history.revisions.append(client.range(b"\0", b"\0", limit=1).revision)
    return history


def capture_options(cluster: str, endpoint: str, spool: Path, **kw: object) -> CaptureOptions:
    return CaptureOptions(backup=BackupOptions(cluster=cluster, endpoints=(endpoint,), capture_files=False),
                          spool_dir=spool, retry_interval=0.2, **kw)  # type: ignore[arg-type]


@contextmanager
def capturing(client: EtcdClient, repo: BackupRepository, options: CaptureOptions) -> Iterator[CaptureStatus]:
    """Run capture in a thread until the block ends; then stop it (committing) and join."""
    stop = threading.Event()
    status = CaptureStatus()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            Capture(client, repo, options, stop=stop, status=status).run()
        except BaseException as exc:  # re-raised in the test's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="test-capture", daemon=True)
    thread.start()
    try:
        yield status
    finally:
        stop.set()
        thread.join(timeout=60)
        if failure:  # even when the block failed: a block waiting on a dead capture times out
            raise failure[0]
    if thread.is_alive():
        raise AssertionError("capture did not stop within 60 s of being asked")


@contextmanager
def capture_started(client: EtcdClient, repo: BackupRepository, options: CaptureOptions) -> Iterator[CaptureStatus]:
    """:func:`capturing`, entered once capture has taken (or resumed after) its chain's base."""
    with capturing(client, repo, options) as status:
        wait_for(lambda: status.chain is not None)
        yield status


def open_repository(url: str | Path) -> BackupRepository:
    """The repository at ``url`` (a directory or s3://), created if absent; S3 settings from the environment."""
    return BackupRepository.open(open_store(str(url), dict(os.environ)), create=True)


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")

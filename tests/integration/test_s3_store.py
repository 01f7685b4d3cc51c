"""S3Store against the real SeaweedFS server: failures of the store itself, and memory use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from lifeboat.errors import RepositoryUnavailable
from lifeboat.store import ObjectStore, S3Store, open_store
from lifeboat.store.s3 import PART_SIZE, PARTS_IN_FLIGHT
from tests.support.ports import free_port
from tests.support.seaweed import S3Endpoint

pytestmark = pytest.mark.integration

MiB = 1 << 20

OPERATIONS: dict[str, Callable[[ObjectStore], object]] = {
    "put_bytes": lambda s: s.put_bytes("k", b"x"),
    "create_only": lambda s: s.put_bytes("k", b"x", create_only=True),
    "put_stream": lambda s: s.put_stream("k", [b"x" * MiB]),
    "get_bytes": lambda s: s.get_bytes("k"),
    "get_stream": lambda s: s.get_stream("k"),
    "stat": lambda s: s.stat("k"),
    "list": lambda s: list(s.list("")),
    "delete": lambda s: s.delete("k"),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_wrong_secret_key_is_repository_unavailable(
    seaweed: S3Endpoint, s3_repo: str, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    wrong_secret = "wrong-" + seaweed.secret_key[::-1]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong_secret)
    store = open_store(s3_repo)

    with pytest.raises(RepositoryUnavailable) as caught:
        OPERATIONS[operation](store)

    message = str(caught.value)
    assert "\n" not in message
    assert seaweed.bucket in message and seaweed.endpoint in message
    assert wrong_secret not in message and seaweed.secret_key not in message


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_missing_bucket_is_repository_unavailable(
    seaweed: S3Endpoint, s3_repo: str, operation: str
) -> None:
    store = open_store("s3://no-such-bucket-lifeboat/prefix")

    with pytest.raises(RepositoryUnavailable, match="no-such-bucket-lifeboat.*does not exist"):
        OPERATIONS[operation](store)


@pytest.mark.parametrize("operation", ["put_stream", "get_bytes", "stat", "list"])
def test_unreachable_endpoint_is_repository_unavailable_quickly(operation: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    store = S3Store(
        "bucket", endpoint=closed, access_key_id="AKEXAMPLE", secret_access_key="not-a-secret"
    )

    started = time.monotonic()
    with pytest.raises(RepositoryUnavailable) as caught:
        OPERATIONS[operation](store)

    assert time.monotonic() - started < 5
    assert closed in str(caught.value) and "\n" not in str(caught.value)


# Streams argv[1] MiB through S3Store.put_stream, each chunk a fresh copy (as a real producer
# makes), and prints the growth of the peak RSS over the upload. The peak is VmHWM, not
# getrusage's ru_maxrss: Linux carries the parent's RSS at fork into the child's ru_maxrss,
# which here (a pytest process) would hide any growth below it. A small upload first warms up
# obstore's runtime and connection pool, a one-off cost rather than per-object memory.
RSS_PROBE = """
import json, os, sys, time
from lifeboat.store import open_store

def peak_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

size_mib = int(sys.argv[1])
store = open_store(os.environ["LIFEBOAT_REPO"])
chunk = os.urandom(1 << 20)
store.put_stream("warmup", (memoryview(chunk).tobytes() for _ in range(3)))
before = peak_kib()
started = time.monotonic()
info = store.put_stream("big", (memoryview(chunk).tobytes() for _ in range(size_mib)))
elapsed = time.monotonic() - started
print(json.dumps({"size": info.size, "growth_kib": peak_kib() - before, "seconds": elapsed}))
"""


def stream_upload(repo: str, size_mib: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(size_mib)],
        env=dict(os.environ, LIFEBOAT_REPO=repo), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, float] = json.loads(done.stdout)
    return result


def test_streamed_upload_keeps_memory_well_under_object_size(s3_repo: str) -> None:
    result = stream_upload(s3_repo, 200)

    assert result["size"] == 200 * MiB
    growth_mib = result["growth_kib"] / 1024
    # obstore fills the next part only once fewer than PARTS_IN_FLIGHT are uploading: at most
    # that many parts plus the one filling, and the chunk being copied (measured: +8.5 MiB with
    # one 5 MiB part in flight). Anything that queued chunks or parts without bound fails here.
    budget_mib = (PARTS_IN_FLIGHT + 1) * PART_SIZE / MiB + 6
    assert growth_mib < budget_mib, f"peak RSS grew {growth_mib:.0f} MiB for a 200 MiB upload"
    assert open_store(s3_repo).stat("big") is not None


def test_a_killed_upload_of_a_key_with_punctuation_is_listed_and_aborted(seaweed: S3Endpoint, s3_repo: str) -> None:
    """The requests lifeboat signs itself encode '+', '=', ',', '@' and ':' in the path and the
    prefix query; a wrong encoding is a SignatureDoesNotMatch or an upload never found."""
    prefix = s3_repo.removeprefix(f"s3://{seaweed.bucket}/")
    name = "clusters/c+1/backups/2026-12-04T10:00:00Z_a+b=c,d@e/snapshot.db.zst"
    upload_id = seaweed.start_multipart_upload(f"{prefix}/{name}", b"p" * 1024)
    store = open_store(s3_repo)

    (found,) = store.incomplete_uploads("clusters/")
    assert (found.name, found.upload_id, found.size) == (name, upload_id, 1024)
    store.remove_incomplete(found)
    assert store.incomplete_uploads("clusters/") == []

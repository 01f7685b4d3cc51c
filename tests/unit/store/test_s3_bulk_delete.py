"""Deleting many objects of an S3 store takes a request per 1,000 keys, not one per key.

Before, prune and pack deleted a chain's segments one request each: a week of unpacked
segments (600,000) was 600,000 requests. The server is a real HTTP server on loopback
(tests/support/fake_s3.py) that records every request.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lifeboat.store.pace import Pace
from lifeboat.store.s3 import DELETES_PER_REQUEST
from tests.support.fake_s3 import FakeS3, fake_s3

PACE = Pace(min_rate=8 << 20, allowance=5.0, idle=5.0)


@pytest.fixture
def fake() -> Iterator[FakeS3]:
    with fake_s3() as server:
        yield server


def deletes(fake: FakeS3) -> int:
    return sum(1 for method, path in fake.requests if method in ("POST", "DELETE"))


def test_many_keys_go_in_a_request_per_thousand_and_nothing_else_goes(fake: FakeS3) -> None:
    keys = [f"clusters/prod/capture/c1/segments/{i:08d}.zst" for i in range(2 * DELETES_PER_REQUEST + 500)]
    for key in keys:
        fake.put(f"prefix/{key}", b"x")
    fake.put("prefix/clusters/prod/capture/c1/chain.json", b"{}")
    store = fake.store(PACE, "prefix")
    fake.requests.clear()

    store.delete_many([*keys, "clusters/prod/capture/c1/segments/never-there.zst"])

    assert deletes(fake) == 3
    assert list(fake.objects) == ["prefix/clusters/prod/capture/c1/chain.json"]


def test_a_batch_the_store_refuses_is_deleted_key_by_key(fake: FakeS3) -> None:
    fake.most_deleted = 1  # an S3-compatible store that takes one key per DeleteObjects
    keys = [f"a/{i}" for i in range(5)]
    for key in keys:
        fake.put(f"prefix/{key}", b"x")
    store = fake.store(PACE, "prefix")
    fake.requests.clear()

    store.delete_many(keys[:4])

    assert list(fake.objects) == ["prefix/a/4"]
    assert deletes(fake) == 1 + 4, "the refused batch, then each key"

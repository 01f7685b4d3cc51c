"""MemoryStore's fault injection, which unit tests of the backup pipeline rely on."""

from __future__ import annotations

from collections.abc import Iterator
import pytest

from lifeboat.errors import IntegrityError, RepositoryUnavailable
from lifeboat.store import Fault, MemoryStore


def chunks(n: int, size: int = 100) -> list[bytes]:
    return [bytes([i]) * size for i in range(n)]


def test_upload_failing_after_some_bytes_leaves_no_object() -> None:
    store = MemoryStore()
    store.inject(Fault("put_stream", after_bytes=250))
    consumed: list[bytes] = []

    def source() -> Iterator[bytes]:
        for c in chunks(10):
            consumed.append(c)
            yield c

    with pytest.raises(RepositoryUnavailable, match="injected"):
        store.put_stream("b/snap", source())

    assert len(consumed) == 3
    assert store.keys() == []


def test_fault_fires_on_the_nth_matching_call_only_once() -> None:
    store = MemoryStore()
    store.inject(Fault("put_bytes", after_calls=2, key_prefix="b/"))

    store.put_bytes("other", b"x")
    store.put_bytes("b/1", b"x")
    store.put_bytes("b/2", b"x")
    with pytest.raises(RepositoryUnavailable):
        store.put_bytes("b/3", b"x")
    store.put_bytes("b/3", b"x")

    assert store.keys() == ["b/1", "b/2", "b/3", "other"]
    assert store.calls["put_bytes"] == 5


def test_fault_can_raise_a_chosen_error() -> None:
    store = MemoryStore()
    store.put_bytes("k", b"x")
    store.inject(Fault("get_bytes", error=IntegrityError("corrupt")))

    with pytest.raises(IntegrityError, match="corrupt"):
        store.get_bytes("k")
    assert store.get_bytes("k") == b"x"


def test_download_failing_midway_yields_the_bytes_before_the_fault() -> None:
    store = MemoryStore()
    store.put_stream("k", chunks(4))
    store.inject(Fault("get_stream", after_bytes=200))

    received: list[bytes] = []
    with pytest.raises(RepositoryUnavailable):
        for c in store.get_stream("k", chunk_size=100):
            received.append(c)

    assert b"".join(received) == b"".join(chunks(2))


def test_fault_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        Fault("upload")
    with pytest.raises(ValueError, match="after_bytes"):
        Fault("put_bytes", after_bytes=1)


def test_stored_bytes_are_a_copy_of_the_callers_buffer() -> None:
    store = MemoryStore()
    buffer = bytearray(b"abc")

    store.put_stream("k", [buffer])  # type: ignore[list-item]
    buffer[0] = ord("z")

    assert store.get_bytes("k") == b"abc"

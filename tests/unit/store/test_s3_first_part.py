"""The chunks read ahead to choose between one PUT and a multipart upload are not held to the end."""

from __future__ import annotations

from lifeboat.store.s3 import _handed_on


def test_read_ahead_chunks_are_dropped_as_they_are_handed_on() -> None:
    head = [b"a", b"b", b"c"]
    handed = _handed_on(head)
    assert next(handed) == b"a"
    assert head == [b"c", b"b"]  # what was handed on is no longer referenced by the list
    assert list(handed) == [b"b", b"c"]
    assert head == []

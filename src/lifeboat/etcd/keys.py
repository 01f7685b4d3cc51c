"""Key arguments and etcd's key-range conventions."""

from __future__ import annotations

Key = bytes | str


def as_bytes(key: Key) -> bytes:
    return key.encode() if isinstance(key, str) else key


def prefix_end(prefix: Key) -> bytes:
    """The ``range_end`` that selects every key starting with ``prefix``.

    etcd's rule: drop trailing 0xff bytes and add one to the last remaining byte; a prefix
    of only 0xff bytes (or an empty one) has no upper bound, written ``b"\\0"``.
    """
    data = bytearray(as_bytes(prefix))
    while data and data[-1] == 0xFF:
        data.pop()
    if not data:
        return b"\0"
    data[-1] += 1
    return bytes(data)


def key_range(key: Key, range_end: Key | None = None, prefix: bool = False) -> tuple[bytes, bytes]:
    """``(key, range_end)`` as etcd takes them; an empty ``key`` with ``prefix`` means every key.

    etcd's rule: an empty ``range_end`` is the one key; ``b"\\0"`` is every key from ``key`` on.
    """
    start = as_bytes(key)
    if prefix:
        return (start or b"\0"), prefix_end(start)
    return start, as_bytes(range_end) if range_end is not None else b""


def in_range(candidate: bytes, start: bytes, end: bytes) -> bool:
    """Whether ``candidate`` is in etcd's range ``(start, end)`` (see :func:`key_range`)."""
    if not end:
        return candidate == start
    if end == b"\0":
        return candidate >= start
    return start <= candidate < end

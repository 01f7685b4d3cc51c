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

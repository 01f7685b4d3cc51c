"""Taking a zstd frame apart in tests: its content checksum removed, a byte of it flipped."""

from __future__ import annotations

import zstandard

# The frame header's descriptor byte follows the 4-byte magic number; its bit 2 says whether
# the frame ends with a 4-byte content checksum (RFC 8878 §3.1.1.1.1).
_DESCRIPTOR_AT = 4
_CHECKSUM_FLAG = 0x04


def without_checksum(frame: bytes) -> bytes:
    """``frame`` as a writer that asks for no content checksum would have written it."""
    assert zstandard.get_frame_parameters(frame).has_checksum
    return frame[:_DESCRIPTOR_AT] + bytes([frame[_DESCRIPTOR_AT] & ~_CHECKSUM_FLAG]) + frame[_DESCRIPTOR_AT + 1:-4]


def flipped(data: bytes, offset: int) -> bytes:
    """``data`` with every bit of its byte at ``offset`` (negative: from the end) inverted."""
    changed = bytearray(data)
    changed[offset] ^= 0xFF
    return bytes(changed)


def unchecked_content(frame: bytes) -> bytes:
    """What zstd decodes ``frame`` to when its content checksum is not compared."""
    return zstandard.ZstdDecompressor().decompress(without_checksum(frame), max_output_size=1 << 26)

"""How backup objects are stored: zstd, then optionally age, as streams.

Stored object = raw bytes → zstd (one frame; a capture segment two,
:func:`compressed_frames`) → age (when recipients are given). Anyone can get the raw bytes
back with the stock tools: ``age -d -i key.txt | zstd -d``.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence

import pyrage
import zstandard

from lifeboat.catalog.age_keys import Identity, Recipient
from lifeboat.catalog.streams import Chunk, Pipe, produced, take_buffer
from lifeboat.config.rules import DEFAULT_ZSTD_LEVEL as DEFAULT_ZSTD_LEVEL
from lifeboat.errors import DecryptionError, IntegrityError

CHUNK = 1 << 20
# pyrage's message when no identity opens any recipient stanza (age's NoMatchingKeys).
_NO_MATCHING_KEY = "No matching keys"
# zstd's worker threads each hold a job's input and output, and more jobs wait in line: with
# two workers a stream holds about seven jobs' worth (15 MiB at 2 MiB jobs, 9 MiB at 1 MiB), the
# same compression ratio and speed on etcd data at either size (docs/benchmarks.md).
ZSTD_JOB_SIZE = 1 << 20
# One decompress call returns all that its input expands to: a 4 MiB range of a stored
# snapshot came out as one 15-30 MiB piece, and a restore holds several pieces in flight.
# Fed in slices, each piece stays near the slice times the ratio (4-8x on etcd data).
DECOMPRESS_SLICE = 128 << 10


def compressing(chunks: Iterable[Chunk], level: int, threads: int = 2) -> Iterator[bytes]:
    """zstd-compress a stream into one frame; with ``threads`` > 0 zstd uses worker threads."""
    # Small jobs keep a backup's memory bounded (and near-constant) whatever the snapshot size.
    params = zstandard.ZstdCompressionParameters.from_level(
        level, threads=threads, job_size=ZSTD_JOB_SIZE if threads else 0, write_checksum=1
    )
    compressor = zstandard.ZstdCompressor(compression_params=params)
    stream = compressor.compressobj(size=-1)
    for chunk in chunks:
        out = stream.compress(chunk)
        if out:
            yield out
    tail = stream.flush()
    if tail:
        yield tail


def decompressing(chunks: Iterable[Chunk]) -> Iterator[bytes]:
    """Undo :func:`compressing`; corrupt input is an IntegrityError."""
    stream = zstandard.ZstdDecompressor().decompressobj()
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            for start in range(0, len(view), DECOMPRESS_SLICE):
                out = stream.decompress(view[start:start + DECOMPRESS_SLICE])
                if out:
                    yield out
        if not stream.eof:
            raise IntegrityError("compressed object ends before its zstd frame does (truncated)")
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"compressed object is corrupt: {exc}") from None


def frames_decompressed(stored: Chunk) -> bytes:
    """The content of every zstd frame in ``stored``, one after another (a version 3 segment
    has two); corrupt or truncated input is an IntegrityError."""
    parts = []
    rest: Chunk = stored
    try:
        while True:
            stream = zstandard.ZstdDecompressor().decompressobj()
            parts.append(stream.decompress(rest))
            if not stream.eof:
                raise IntegrityError("compressed object ends before its zstd frame does (truncated)")
            rest = stream.unused_data
            if not rest:
                return b"".join(parts)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"compressed object is corrupt: {exc}") from None


_decompressors = threading.local()


def _thread_decompressor() -> zstandard.ZstdDecompressor:
    """This thread's zstd decompressor, kept: a new one allocates its context and window
    buffer (about 2.7 MB at level 3, every page faulted in again) for each frame."""
    found: zstandard.ZstdDecompressor | None = getattr(_decompressors, "zstd", None)
    if found is None:
        found = _decompressors.zstd = zstandard.ZstdDecompressor()
    return found


class FrameBuffer:
    """One buffer that zstd frames are decompressed into, one after another (a chain's segments).

    :meth:`decompress` leaves a frame's raw bytes in ``data[:size]``: valid until the next call,
    which overwrites them (copy what must outlive that). A fresh buffer per frame would be a
    fresh mapping whose every page faults when first written: about 700 faults for each 2.8 MB
    segment, each time it is decompressed. A frame larger than the buffer gets a new, larger
    ``data`` (views of the old one stay valid); the largest frame so far sets the size kept.
    """

    def __init__(self, size: int = 1 << 20) -> None:
        self.data = bytearray(size)

    def decompress(self, stored: Chunk) -> int:
        """Decompress the zstd frame ``stored``; its raw size. Corrupt input is an IntegrityError.

        A frame cut short yields fewer bytes, not an error (zstd's stream reader does not
        notice, and checks the frame's checksum only at its end): the caller compares the size,
        or the content's own check (a segment's end line and sha256), with what it expects.
        """
        reader = _thread_decompressor().stream_reader(stored, read_across_frames=False)
        size = 0
        try:
            while True:
                if size == len(self.data):
                    self._grow(size)
                with memoryview(self.data) as view:
                    got = reader.readinto(view[size:])
                if not got:
                    return size
                size += got
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"compressed object is corrupt: {exc}") from None

    def _grow(self, size: int) -> None:
        """A new ``data``, an eighth larger, holding the first ``size`` bytes of the old one."""
        grown = bytearray(size + (size >> 3) + (64 << 10))
        grown[:size] = memoryview(self.data)[:size]
        self.data = grown


# zstd's frame format (RFC 8878 §3.1.1.2): each block starts with a 3-byte little-endian
# header: bit 0 marks the last block, bits 1-2 its type, the rest its size. A raw or a
# compressed block's content is that size in bytes, an RLE block's one byte (the size is
# what it expands to); type 3 is reserved. After the last block, 4 bytes of checksum
# when the frame header asks for one.
_BLOCK_HEADER_SIZE = 3
_RLE_BLOCK = 1
_RESERVED_BLOCK = 3
_CONTENT_CHECKSUM_SIZE = 4


def checksummed_frame_end(stored: Chunk, start: int = 0) -> int | None:
    """Where the zstd frame at ``start`` of ``stored`` ends, when it is whole and carries a
    content checksum; None otherwise: for a frame without a checksum, one cut short, or bytes
    that are not a frame (the caller checks the content another way then).

    Decompressing such a frame (:meth:`FrameBuffer.decompress`, :func:`decompressing`)
    compares the checksum, the low 32 bits of the XXH64 of the content, with the content it
    produced, and fails when they differ. Reads only the block headers (a few dozen for a
    segment)."""
    with memoryview(stored) as whole, whole[start:] as view:
        try:
            if not zstandard.get_frame_parameters(view).has_checksum:
                return None
            at = zstandard.frame_header_size(view)
        except zstandard.ZstdError:
            return None
        while at + _BLOCK_HEADER_SIZE <= len(view):
            header = int.from_bytes(view[at:at + _BLOCK_HEADER_SIZE], "little")
            kind, size = (header >> 1) & 3, header >> 3
            if kind == _RESERVED_BLOCK:
                return None
            at += _BLOCK_HEADER_SIZE + (1 if kind == _RLE_BLOCK else size)
            if header & 1:
                end = at + _CONTENT_CHECKSUM_SIZE
                return start + end if end <= len(view) else None
        return None


def frame_content_size(stored: Chunk, start: int = 0) -> int:
    """The content size the zstd frame at ``start`` declares; -1 when it declares none."""
    with memoryview(stored) as whole, whole[start:] as view:
        try:
            size = zstandard.get_frame_parameters(view).content_size
        except zstandard.ZstdError:
            return -1
    return -1 if size == zstandard.CONTENTSIZE_UNKNOWN else int(size)


def compressed_frames(parts: Iterable[bytes], level: int) -> bytes:
    """Each of ``parts`` as a zstd frame of its own, with its size and a content checksum."""
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    return b"".join(compressor.compress(part) for part in parts)


def decoded_pieces(chunks: Iterable[Chunk], identities: Sequence[Identity] | None, raw_size: int,
                   piece: int = CHUNK, depth: int = 4) -> Iterator[memoryview]:
    """Stored bytes → the ``raw_size`` raw bytes, decoded in a thread into a few reused buffers.

    Each piece is a view of one of ``depth`` + 2 buffers of ``piece`` bytes, valid until the
    next piece is asked for (copy what must outlive that). A fresh buffer per piece is a fresh
    mapping whose every page faults when first written: 300,000 faults for a 1.2 GB snapshot.
    Output shorter or longer than ``raw_size`` is an IntegrityError, as corrupt input is (zstd
    itself does not notice a frame cut short).
    """
    free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    for _ in range(depth + 2):
        free.put(bytearray(piece))

    def produce(pipe: Pipe[memoryview]) -> None:
        source = _ViewReader(decrypting(chunks, identities) if identities else chunks)
        reader = zstandard.ZstdDecompressor().stream_reader(  # it only calls source.read(n)
            source, read_size=DECOMPRESS_SLICE, read_across_frames=False)  # type: ignore[arg-type]
        done = 0
        try:
            while True:
                buffer = take_buffer(free, lambda: pipe.cancelled)
                got = reader.readinto(buffer)
                if not got:
                    break
                done += got
                if done > raw_size:
                    raise IntegrityError(f"compressed object expands to more than its {raw_size} raw bytes")
                pipe.put(memoryview(buffer)[:got])
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"compressed object is corrupt: {exc}") from None
        if done < raw_size:
            raise IntegrityError(f"compressed object ends after {done} of its {raw_size} raw bytes (truncated)")

    for view in produced(produce, "decode", depth):
        yield view
        free.put(view.obj)  # type: ignore[arg-type]  # a view of one of the buffers above


class _ViewReader:
    """``read(n)`` over a chunk iterator, answering with views of the chunks (no copy)."""

    def __init__(self, chunks: Iterable[Chunk]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def read(self, size: int = -1) -> memoryview:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return memoryview(b"")
            self._pending = memoryview(chunk)
        if size < 0:
            size = len(self._pending)
        out, self._pending = self._pending[:size], self._pending[size:]
        return out


class _IteratorReader(io.RawIOBase):
    """A read-only file over a chunk iterator (what pyrage's *_io functions pull from)."""

    def __init__(self, chunks: Iterable[Chunk]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")
        self.failure: BaseException | None = None  # what the source raised, passed on unchanged

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: "bytearray | memoryview") -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
            except BaseException as exc:
                self.failure = exc
                raise
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class _PipeWriter(io.RawIOBase):
    """A write-only file that hands what is written to a :class:`Pipe`, in ~1 MiB chunks."""

    def __init__(self, pipe: Pipe[bytes]) -> None:
        self._pipe = pipe
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: "bytes | bytearray | memoryview") -> int:  # type: ignore[override]
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            self._pipe.put(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    def drain(self) -> None:
        if self._buffer:
            self._pipe.put(bytes(self._buffer))
            self._buffer.clear()


def _pump(work: Callable[[_IteratorReader, _PipeWriter], None], chunks: Iterable[Chunk],
          name: str) -> Iterator[bytes]:
    """Run a pull-style codec (reader → writer) in a thread, yielding its output here."""

    def produce(pipe: Pipe[bytes]) -> None:
        writer = _PipeWriter(pipe)
        work(_IteratorReader(chunks), writer)
        writer.drain()

    return produced(produce, name)


def encrypting(chunks: Iterable[bytes], recipients: Sequence[Recipient]) -> Iterator[bytes]:
    """age-encrypt a stream to every recipient (binary age format, not armored)."""

    def work(reader: _IteratorReader, writer: _PipeWriter) -> None:
        try:
            pyrage.encrypt_io(reader, writer, [r.key for r in recipients])
        except pyrage.EncryptError as exc:
            raise IntegrityError(f"age encryption failed: {exc}") from None

    return _pump(work, chunks, "age-encrypt")


def decrypting(chunks: Iterable[Chunk], identities: Sequence[Identity]) -> Iterator[bytes]:
    """Decrypt an age stream with any of ``identities``; damaged input is an IntegrityError."""

    def work(reader: _IteratorReader, writer: _PipeWriter) -> None:
        try:
            pyrage.decrypt_io(reader, writer, [i.key for i in identities])
        except pyrage.DecryptError as exc:
            if _NO_MATCHING_KEY not in str(exc):
                # Header is invalid / Header MAC is invalid: the identity matched a stanza (or the
                # header cannot even be parsed), so the bytes were changed, not the key wrong.
                raise IntegrityError(f"encrypted object is damaged: age header check failed ({exc})") from None
            raise DecryptionError(
                f"cannot decrypt it with the identity given ({exc}); pass the age identity matching "
                "one of the recipients it was encrypted to"
            ) from None
        except OSError as exc:
            if reader.failure is exc:
                raise
            # pyrage reports a payload chunk that fails age's authentication (a flipped byte,
            # a truncated object) as a bare OSError('decryption error').
            raise IntegrityError(
                "encrypted object is damaged: a payload chunk failed age's authentication "
                "(altered or truncated)"
            ) from None

    return _pump(work, chunks, "age-decrypt")


def encode(chunks: Iterable[Chunk], level: int, recipients: Sequence[Recipient]) -> Iterator[bytes]:
    """Raw bytes → stored bytes."""
    compressed = compressing(chunks, level)
    return encrypting(compressed, recipients) if recipients else compressed


def decode(chunks: Iterable[Chunk], identities: Sequence[Identity] | None) -> Iterator[bytes]:
    """Stored bytes → raw bytes. ``identities`` must be given for encrypted objects."""
    return decompressing(decrypting(chunks, identities) if identities else chunks)

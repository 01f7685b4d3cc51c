from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest
import zstandard

from lifeboat.catalog.age_keys import load_identities, load_recipients
from lifeboat.catalog.codec import FrameBuffer, checksummed_frame_end, decode, decoded_pieces, encode
from lifeboat.catalog.streams import Cancelled, Digest, PieceBuffers, SnapshotDigest, hashing, threaded
from lifeboat.errors import DecryptionError, IntegrityError, UsageError
from tests.support.binaries import tool
from tests.support.zstd_frames import flipped, unchecked_content, without_checksum


def content_checksummed(stored: bytes) -> bool:
    """Whether ``stored`` is exactly one whole zstd frame that carries a content checksum."""
    return checksummed_frame_end(stored) == len(stored)


def chunks_of(data: bytes, size: int = 100_000) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.fixture
def payload() -> bytes:
    return os.urandom(300_000) + b"/registry/pods/default/x" * 200_000


@pytest.fixture
def age_identity(tmp_path: Path) -> tuple[Path, str]:
    identity = pyrage.x25519.Identity.generate()
    path = tmp_path / "key.txt"
    path.write_text(f"# created for a test\n{identity}\n")
    return path, str(identity.to_public())


def test_round_trip_without_encryption(payload: bytes) -> None:
    stored = b"".join(encode(chunks_of(payload), 3, []))
    assert len(stored) < len(payload) / 2
    assert b"".join(decode(chunks_of(stored, 7777), None)) == payload


def test_round_trip_with_age(payload: bytes, age_identity: tuple[Path, str]) -> None:
    key, public = age_identity
    stored = b"".join(encode(chunks_of(payload), 3, load_recipients([public])))
    assert stored.startswith(b"age-encryption.org/v1")
    plain = decode(chunks_of(stored, 5000), load_identities([str(key)]))
    assert b"".join(plain) == payload


def test_stock_age_and_zstd_open_a_stored_object(
    payload: bytes, age_identity: tuple[Path, str], tmp_path: Path
) -> None:
    age, zstd = tool("age", "Debian age"), tool("zstd", "Debian zstd")
    key, public = age_identity
    stored = tmp_path / "snapshot.db.zst.age"
    stored.write_bytes(b"".join(encode(chunks_of(payload), 3, load_recipients([public]))))
    decrypted = subprocess.run([age, "-d", "-i", key, stored], capture_output=True, check=True)
    raw = subprocess.run([zstd, "-d", "-c"], input=decrypted.stdout, capture_output=True, check=True)
    assert raw.stdout == payload


def test_wrong_identity_is_a_decryption_error(payload: bytes, age_identity: tuple[Path, str],
                                              tmp_path: Path) -> None:
    _, public = age_identity
    stored = b"".join(encode(chunks_of(payload), 3, load_recipients([public])))
    other = tmp_path / "other.txt"
    other.write_text(str(pyrage.x25519.Identity.generate()) + "\n")
    with pytest.raises(DecryptionError) as caught:
        b"".join(decode([stored], load_identities([str(other)])))
    # Said of backups and capture segments alike (pack, the survey): neither is named "the backup".
    assert "cannot decrypt it with the identity given" in str(caught.value) and "backup" not in str(caught.value)


def test_truncated_object_is_an_integrity_error(payload: bytes) -> None:
    stored = b"".join(encode([payload], 3, []))
    with pytest.raises(IntegrityError):
        b"".join(decode([stored[: len(stored) // 2]], None))


def test_tampered_object_is_an_integrity_error(payload: bytes) -> None:
    stored = bytearray(b"".join(encode([payload], 3, [])))
    stored[len(stored) // 2] ^= 0xFF
    with pytest.raises(IntegrityError):
        b"".join(decode([bytes(stored)], None))


@pytest.mark.parametrize("where", ["version line", "header mac", "payload", "last byte"])
def test_damaged_encrypted_object_is_an_integrity_error_not_an_os_error(
    payload: bytes, age_identity: tuple[Path, str], where: str
) -> None:
    path, public = age_identity
    stored = bytearray(b"".join(encode(chunks_of(payload), 3, load_recipients([public]))))
    # (A byte of a recipient stanza is not here: age cannot tell it from a wrong identity.)
    at = {"version line": 3, "header mac": stored.index(b"\n--- ") + 6,
          "payload": len(stored) // 2, "last byte": len(stored) - 1}[where]
    stored[at] ^= 0x01
    with pytest.raises(IntegrityError, match="damaged"):
        b"".join(decode(chunks_of(bytes(stored)), load_identities([str(path)])))


def test_failure_of_the_source_of_an_encrypted_object_passes_through_unchanged(
    payload: bytes, age_identity: tuple[Path, str]
) -> None:
    path, public = age_identity
    stored = b"".join(encode(chunks_of(payload), 3, load_recipients([public])))

    def source() -> Iterator[bytes]:
        yield stored[:200_000]
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output"):
        b"".join(decode(source(), load_identities([str(path)])))


def test_bad_recipient_and_identity_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        load_recipients(["age1notakey"])
    bad = tmp_path / "bad.txt"
    bad.write_text("AGE-SECRET-KEY-1NOTREALLY\n")
    with pytest.raises(UsageError) as err:
        load_identities([str(bad)])
    assert "NOTREALLY" not in str(err.value)
    with pytest.raises(UsageError):
        load_identities([str(tmp_path / "missing.txt")])


def test_threaded_reraises_upstream_error_and_closes_upstream() -> None:
    closed = []

    def source():  # type: ignore[no-untyped-def]
        try:
            yield b"a"
            raise OSError("disk on fire")
        finally:
            closed.append(True)

    with pytest.raises(OSError, match="disk on fire"):
        list(threaded(source(), "test"))
    assert closed == [True]


class _StalledStream:
    """An upstream whose second read waits until it is cancelled, as a stream from a stalled etcd does."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.reads = 0

    def __iter__(self) -> _StalledStream:
        return self

    def __next__(self) -> bytes:
        self.reads += 1
        if self.reads == 1:
            return b"first"
        if not self.cancelled.wait(timeout=30):
            return b"never cancelled"
        raise RuntimeError("cancelled")

    def cancel(self) -> None:
        self.cancelled.set()


def test_threaded_consumer_stopping_early_cancels_an_upstream_stuck_in_a_read() -> None:
    upstream = _StalledStream()
    stream = threaded(upstream, "test")
    assert next(stream) == b"first"
    while upstream.reads < 2:  # the producer is now waiting in its second read
        threading.Event().wait(0.001)

    stream.close()  # what SIGTERM's unwinding does to an abandoned backup

    assert upstream.cancelled.is_set()  # at once, not after the producer's 10 s join gives up


def test_an_abandoned_pipeline_of_stages_unwinds_to_its_first_and_cancels_its_read() -> None:
    # etcd's stream → spool stage → zstd stage → the upload in the main thread, as a backup
    # runs: the middle stage waits for input, not on a put, when the upload is abandoned.
    upstream = _StalledStream()
    middle = threaded((chunk.upper() for chunk in threaded(upstream, "first")), "middle")
    assert next(middle) == b"FIRST"
    while upstream.reads < 2:
        threading.Event().wait(0.001)

    middle.close()

    assert upstream.cancelled.is_set()


def test_threaded_consumer_stopping_early_stops_producer() -> None:
    produced = []

    def endless():  # type: ignore[no-untyped-def]
        n = 0
        while True:
            produced.append(n)
            n += 1
            yield b"x"

    stream = threaded(endless(), "test", depth=2)
    assert next(stream) == b"x"
    stream.close()
    count = len(produced)
    assert count < 10
    assert len(produced) == count


def test_hashing_and_pieces_preserve_bytes(payload: bytes) -> None:
    digest = Digest()
    buffers = PieceBuffers(4096, 2)
    out = [bytes(view) for view in buffers.returned(buffers.pieces(hashing(chunks_of(payload, 333), digest)))]
    assert b"".join(out) == payload
    assert {len(piece) for piece in out[:-1]} == {4096}
    assert digest.size == len(payload)


@pytest.mark.parametrize("sizes", [[], [0], [4096], [4096, 0, 4096], [1, 4095, 4097, 8191], [10_000], [3] * 3000])
def test_pieces_are_the_stream_cut_at_the_piece_size(sizes: list[int]) -> None:
    data = os.urandom(sum(sizes))
    chunks, at = [], 0
    for size in sizes:
        chunks.append(memoryview(data)[at : at + size] if size % 2 else data[at : at + size])
        at += size
    buffers = PieceBuffers(4096, 1)
    out = [bytes(view) for view in buffers.returned(buffers.pieces(chunks))]
    assert out == [data[i : i + 4096] for i in range(0, len(data), 4096)]


def test_pieces_handed_to_another_thread_arrive_intact_in_a_few_reused_buffers() -> None:
    # The producer runs ahead of the consumer by the pipe's depth: a buffer it took back
    # before the consumer was done with it would show as a piece changed after it arrived.
    # Two buffers, so that a buffer given back is the next one the producer fills.
    data = os.urandom(1 << 19)
    buffers = PieceBuffers(4096, 2)
    seen: set[int] = set()
    out = []
    for view in buffers.returned(threaded(buffers.pieces(chunks_of(data, 1000)), "test", depth=1)):
        seen.add(id(view.obj))
        first = bytes(view)
        threading.Event().wait(0.0005)  # the producer fills other buffers meanwhile
        assert bytes(view) == first
        out.append(first)
    assert b"".join(out) == data
    assert len(seen) == 2


def test_a_producer_waiting_for_a_buffer_stops_when_the_consumer_goes_away() -> None:
    buffers = PieceBuffers(10, 1)
    stream = buffers.returned(threaded(buffers.pieces([b"x" * 1000]), "test", depth=4))
    next(stream)  # the only buffer is in the consumer's hand: the producer waits for another
    stopped = threading.Event()
    pieces = buffers.pieces([b"y" * 100])
    def wait_for_buffer() -> None:
        with pytest.raises(Cancelled):
            next(pieces)
        stopped.set()
    waiter = threading.Thread(target=wait_for_buffer)
    waiter.start()
    stream.close()
    waiter.join(timeout=5)
    assert stopped.is_set()


def test_decoding_a_large_stored_range_yields_small_pieces() -> None:
    # A restore reads 4 MiB ranges; etcd data expands 4-8x, and several pieces are in flight
    # at once, so one piece per range held 15-30 MiB each (verify of an 8 GiB db: 241 MB RSS).
    raw = b"".join(f"/registry/pods/ns-{i % 97}/pod-{i}: {'x' * (i % 50)}\n".encode() for i in range(600_000))
    stored = b"".join(encode([raw], 1, []))
    assert len(raw) > 8 * len(stored) and len(stored) > 1 << 20

    pieces = list(decode([stored], None))
    assert b"".join(pieces) == raw
    assert max(len(p) for p in pieces) <= 4 << 20


def test_pieces_decoded_into_reused_buffers_match_the_raw_bytes(payload: bytes) -> None:
    stored = b"".join(encode(chunks_of(payload), 3, []))
    buffers: set[int] = set()
    joined = bytearray()
    for piece in decoded_pieces(chunks_of(stored, 7777), None, len(payload), piece=64 << 10, depth=2):
        joined += piece  # a piece is valid until the next one is asked for
        buffers.add(id(piece.obj))
    assert joined == payload
    # A fresh buffer per piece faults in every page of it; these few go round instead.
    assert len(payload) // (64 << 10) > 50 and len(buffers) <= 4


def test_pieces_of_an_encrypted_object_match_the_raw_bytes(payload: bytes, age_identity: tuple[Path, str]) -> None:
    key, public = age_identity
    stored = b"".join(encode(chunks_of(payload), 3, load_recipients([public])))
    pieces = decoded_pieces(chunks_of(stored, 5000), load_identities([str(key)]), len(payload))
    assert b"".join(bytes(p) for p in pieces) == payload


@pytest.mark.parametrize("cut", [10, "half"])
def test_a_stored_object_cut_short_is_named_truncated(payload: bytes, cut: int | str) -> None:
    # zstd's streaming reader ends quietly at the end of its input, complete frame or not.
    stored = b"".join(encode([payload], 3, []))
    end = len(stored) - 10 if cut == 10 else len(stored) // 2
    with pytest.raises(IntegrityError, match="truncated"):
        for _ in decoded_pieces([stored[:end]], None, len(payload)):
            pass


def test_pieces_beyond_the_raw_size_or_after_the_frame_are_integrity_errors(payload: bytes) -> None:
    stored = b"".join(encode([payload], 3, []))
    with pytest.raises(IntegrityError, match="more than"):
        for _ in decoded_pieces([stored], None, len(payload) - 1):
            pass
    with pytest.raises(IntegrityError, match="corrupt"):
        for _ in decoded_pieces([stored + b"trailing bytes"], None, len(payload)):
            pass
    damaged = bytearray(stored)
    damaged[len(damaged) // 2] ^= 0xFF
    with pytest.raises(IntegrityError, match="corrupt"):
        for _ in decoded_pieces([bytes(damaged)], None, len(payload)):
            pass


def test_stopping_early_ends_the_decoding_thread(payload: bytes) -> None:
    stored = b"".join(encode([payload * 4], 3, []))
    pieces = decoded_pieces(chunks_of(stored), None, 4 * len(payload), piece=4096, depth=1)
    next(pieces)
    pieces.close()
    assert not [t for t in threading.enumerate() if t.name == "lifeboat-decode"]


def test_snapshot_digest_of_views_of_one_reused_buffer_checks_the_trailer() -> None:
    db = os.urandom(3 * 4096)
    stream = db + hashlib.sha256(db).digest()
    buffer, digest = bytearray(1000), SnapshotDigest()
    for start in range(0, len(stream), len(buffer)):
        part = stream[start : start + len(buffer)]
        buffer[: len(part)] = part
        digest.update(memoryview(buffer)[: len(part)])
        buffer[:] = bytes(len(buffer))  # the next piece overwrites it
    assert digest.verify_trailer() == hashlib.sha256(db).hexdigest()


def test_frames_decompressed_into_one_buffer_leave_nothing_of_the_one_before() -> None:
    long = os.urandom(1 << 20) + b"/registry/pods/default/long" * 100_000  # beyond the first buffer
    short = b"/registry/leases/short" * 10
    buffer = FrameBuffer()
    compress = zstandard.ZstdCompressor(write_checksum=True).compress
    size = buffer.decompress(compress(long))
    assert bytes(buffer.data[:size]) == long
    held = memoryview(buffer.data)[:size]  # a view still held: the buffer is reused anyway
    size = buffer.decompress(compress(short))
    assert bytes(buffer.data[:size]) == short
    del held
    assert buffer.decompress(compress(b"")) == 0


def test_a_corrupt_frame_is_an_integrity_error_and_a_cut_one_comes_out_short(payload: bytes) -> None:
    stored = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(payload))
    buffer = FrameBuffer()
    assert buffer.decompress(bytes(stored[: len(stored) // 2])) < len(payload), "the caller's size check catches it"
    stored[len(stored) // 2] ^= 0xFF
    with pytest.raises(IntegrityError, match="corrupt"):
        buffer.decompress(bytes(stored))


def test_a_whole_frame_with_a_checksum_is_recognised_as_checked_by_its_decompression(payload: bytes) -> None:
    stored = b"".join(encode([payload], 3, []))  # as backups and segments are written, in threads
    assert content_checksummed(stored)
    assert content_checksummed(zstandard.ZstdCompressor(write_checksum=True).compress(b""))
    assert content_checksummed(zstandard.ZstdCompressor(write_checksum=True).compress(b"a" * 500_000)), "RLE blocks"


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 1000, -5, -4, -1])
def test_a_frame_cut_short_is_not_taken_as_checked(payload: bytes, cut: int) -> None:
    stored = b"".join(encode([payload], 3, []))
    assert not content_checksummed(stored[:cut])


def test_a_frame_without_a_checksum_or_with_more_after_it_is_not_taken_as_checked(payload: bytes) -> None:
    stored = b"".join(encode([payload], 3, []))
    assert not content_checksummed(without_checksum(stored))
    assert not content_checksummed(zstandard.ZstdCompressor(write_checksum=False).compress(payload))
    assert not content_checksummed(stored + stored), "two frames"
    assert not content_checksummed(stored + b"\0")
    assert not content_checksummed(b"")
    assert not content_checksummed(b"not a zstd frame at all")


@pytest.mark.parametrize("initial", [1 << 20, 300_000 + 24 * 200_000])  # the content fills the buffer exactly
def test_a_frame_whose_content_does_not_match_its_checksum_is_refused(payload: bytes, initial: int) -> None:
    """The survey relies on it (instead of a segment's sha256) for frames with a checksum: a
    byte flipped in a stored (incompressible) block decodes without any other error."""
    stored = b"".join(encode([payload], 3, []))
    in_raw_block = flipped(stored, 1000)
    assert unchecked_content(in_raw_block) != payload, "zstd alone decodes it: only its checksum tells"
    for damaged in (in_raw_block, *(flipped(stored, -at) for at in range(1, 5))):
        with pytest.raises(IntegrityError, match="corrupt"):
            FrameBuffer(initial).decompress(damaged)
    assert FrameBuffer(initial).decompress(stored) == len(payload)


def passphrase_identity_files(tmp_path: Path) -> dict[str, Path]:
    """An age identity file encrypted with a passphrase (as ``age -p`` writes it, binary and
    armored) and an SSH key protected by one: each opens only with a passphrase typed in."""
    identity = f"{pyrage.x25519.Identity.generate()}\n".encode()
    binary = pyrage.passphrase.encrypt(identity, "correct horse")
    files = {"age binary": tmp_path / "key.age", "age armored": tmp_path / "key.age.asc",
             "ssh": tmp_path / "id_ed25519"}
    files["age binary"].write_bytes(binary)
    encoded = base64.encodebytes(binary).decode()
    files["age armored"].write_text(f"-----BEGIN AGE ENCRYPTED FILE-----\n{encoded}-----END AGE ENCRYPTED FILE-----\n")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "correct horse", "-f", str(files["ssh"])], check=True)
    return files


@pytest.mark.parametrize("kind, words", [("age binary", "encrypted"), ("age armored", "encrypted"),
                                         ("ssh", "passphrase")])
def test_an_identity_file_locked_by_a_passphrase_is_refused_saying_so(tmp_path: Path, kind: str, words: str) -> None:
    """It was "has a line that is not an age identity" or "not a usable SSH private key": an
    operator could not tell a locked key from a damaged one."""
    path = passphrase_identity_files(tmp_path)[kind]
    with pytest.raises(UsageError) as caught:
        load_identities([str(path)])
    message = str(caught.value)
    assert words in message and "cannot" in message and str(path) in message
    assert "AGE-SECRET-KEY" not in message and "correct horse" not in message


def test_an_ssh_key_of_a_type_age_cannot_encrypt_to_is_named_so(tmp_path: Path) -> None:
    """age encrypts to ssh-ed25519 and ssh-rsa keys; an ECDSA key was "not an age recipient (age1...)
    or SSH public key", which it is."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(tmp_path / "id_ecdsa")], check=True)
    public = (tmp_path / "id_ecdsa.pub").read_text().strip()
    with pytest.raises(UsageError) as caught:
        load_recipients([public])
    assert "ssh-ed25519 or ssh-rsa" in str(caught.value) and "ecdsa" in str(caught.value)

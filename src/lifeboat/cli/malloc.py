"""How glibc's malloc serves a command's big short-lived buffers: bounded memory first.

Every command caps malloc at two arenas and keeps each buffer of 256 KiB or more in its own
mapping, unmapped when freed (:func:`tune_malloc`). A restore of a db up to
:data:`REUSE_UP_TO` then lets its chunks come from the heaps instead (:func:`reuse_chunks_for`),
which saves the page faults of a fresh mapping per chunk; above that size the heaps fragment
over the long download and the memory bound would not hold. Reuse costs memory at any size
(about 30 MB at 1.2 GB). The decoded pieces of a download now go round a few reused buffers
(:func:`lifeboat.catalog.codec.decoded_pieces`): 70,000 faults instead of 424,000 to decode
1.2 GB; what still maps fresh memory per chunk is the download's 4 MiB ranges, allocated
inside obstore.
"""

from __future__ import annotations

import ctypes

# The largest db whose restore reuses heap memory for its chunks. Measured 2026-12-01 (quiet
# machine, SeaweedFS): a 1.2 GB restore took 12.2 s and 11.2 s of CPU with reuse against 16.6 s
# and 16.3 s without, and peaked at 173 MB against 141 MB. Over a longer download the heaps
# fragment further: the fetch of an 8.1 GiB db peaked at 183 MB with reuse, 150 MB without (a
# verify of it, 161 against 128 MB), past the 150 MB bound, so big restores map each chunk.
REUSE_UP_TO = 2 << 30


def tune_malloc(reuse_chunks: bool = False) -> None:
    """Cap glibc's malloc arenas at two, and keep big buffers out of its heaps (unless ``reuse_chunks``).

    glibc gives each thread its own arena; a backup hands 1 MiB chunks between threads (etcd
    stream, zstd, age, upload), which then fragments one arena per thread and grows peak
    memory by about 10 MB for nothing. Worse, glibc raises its mmap threshold to the size of
    each mmapped chunk freed (up to 32 MiB), after which those 1 MiB chunks come from the
    heaps too, interleaved with small long-lived objects, so freed ones cannot be returned:
    a fixed threshold keeps every chunk of 256 KiB or more in its own mapping, unmapped when
    freed (a backup of a 1.26 GB long-history db peaked at 155-161 MB before, 129-140 MB
    after). Not glibc (musl, macOS): nothing to do.

    ``reuse_chunks`` is the opposite trade: each piece in its own mapping is a fresh mapping
    whose every page faults on first touch, 425,000 faults and 1.5 s of system time to decode
    a 1.2 GB snapshot; with pieces up to 64 MiB taken from the heaps and 128 MiB of free heap
    kept, they are reused: 13,000 faults, 0.2 s.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-8, 2)  # -8 is M_ARENA_MAX in glibc's malloc.h
        if reuse_chunks:
            libc.mallopt(-3, 64 << 20)  # -3 is M_MMAP_THRESHOLD; setting it stops its adjustment
            libc.mallopt(-1, 128 << 20)  # -1 is M_TRIM_THRESHOLD
            return
        libc.mallopt(-3, 256 << 10)
    except (OSError, AttributeError):
        pass


def reuse_chunks_for(db_bytes: int) -> bool:
    """Before a restore of a ``db_bytes`` snapshot: reuse heap memory for its chunks if it is small enough."""
    if db_bytes > REUSE_UP_TO:
        return False
    tune_malloc(reuse_chunks=True)
    return True

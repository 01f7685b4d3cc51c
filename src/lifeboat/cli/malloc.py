"""How glibc's malloc serves a command's big short-lived buffers: bounded memory first.

Every command caps malloc at two arenas and keeps each buffer of 256 KiB or more in its own
mapping, unmapped when freed (:func:`tune_malloc`). Such a mapping faults in every page it is
written to, so the hot paths do not allocate per chunk: a restore decodes its download into
a few reused buffers (:func:`lifeboat.catalog.codec.decoded_pieces`) and takes the ranges it
downloads as views of obstore's buffers, not copies; a backup copies etcd's snapshot stream
into a few reused pieces (:class:`lifeboat.catalog.streams.PieceBuffers`). Before, a restore let its chunks come
from the heaps instead (faster at 1.2 GB, 173 against 141 MB; 183 MB over an 8.1 GiB
download, past the 150 MB bound, as the heaps fragmented).
"""

from __future__ import annotations

import ctypes


def tune_malloc() -> None:
    """Cap glibc's malloc arenas at two, and keep big buffers out of its heaps.

    glibc gives each thread its own arena; a backup hands 1 MiB chunks between threads (etcd
    stream, zstd, age, upload), which then fragments one arena per thread and grows peak
    memory by about 10 MB for nothing. Worse, glibc raises its mmap threshold to the size of
    each mmapped chunk freed (up to 32 MiB), after which those 1 MiB chunks come from the
    heaps too, interleaved with small long-lived objects, so freed ones cannot be returned:
    a fixed threshold keeps every chunk of 256 KiB or more in its own mapping, unmapped when
    freed (a backup of a 1.26 GB long-history db peaked at 155-161 MB before, 129-140 MB
    after). Not glibc (musl, macOS): nothing to do.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-8, 2)  # -8 is M_ARENA_MAX in glibc's malloc.h
        libc.mallopt(-3, 256 << 10)  # -3 is M_MMAP_THRESHOLD; setting it stops its adjustment
    except (OSError, AttributeError):
        pass

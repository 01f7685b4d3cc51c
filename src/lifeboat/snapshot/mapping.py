"""Mapping a snapshot file into memory, and the translation of faults while reading it."""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lifeboat.errors import NotFound, OperationFailed, SnapshotFormatError

# Faults that can only come from malformed bytes reaching a decoder.
DECODE_FAULTS = (struct.error, IndexError, ValueError, OverflowError, KeyError, RecursionError)


@contextmanager
def translated_faults(path: Path) -> Iterator[None]:
    """Turn decoder faults and OS errors about ``path`` into lifeboat errors."""
    try:
        yield
    except DECODE_FAULTS as exc:
        raise SnapshotFormatError(
            f"{path}: malformed bbolt structure ({type(exc).__name__}: {exc}); "
            "the snapshot is corrupted, use another copy"
        ) from exc
    except FileNotFoundError as exc:
        raise NotFound(f"snapshot file {path} does not exist; check the path") from exc
    except OSError as exc:
        raise OperationFailed(f"cannot read snapshot file {path}: {exc.strerror or exc}") from exc


@contextmanager
def mapped(path: Path) -> Iterator[mmap.mmap | None]:
    """A read-only map of the whole file, or None for an empty file."""
    with translated_faults(path), path.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            yield None
            return
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        yield mm
    finally:
        mm.close()

"""A bounded local spool of encoded segments waiting for the repository to come back.

Segments are files named ``<sequence>.<segment name>`` in one directory, uploaded oldest
first. The spool never grows past its limit: :meth:`Spool.add` refuses a segment that would
not fit, and capture then records a gap instead of holding events in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from lifeboat.errors import OperationFailed


class SpoolFull(OperationFailed):
    """The local spool has no room for another segment."""


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise OperationFailed(f"cannot create the capture spool {directory}: {exc.strerror}") from None

    def _files(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file() and not p.name.endswith(".part"))

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self._files())

    def __len__(self) -> int:
        return len(self._files())

    def names(self) -> list[str]:
        """The names of the spooled segments, oldest first."""
        return [path.name.split(".", 2)[2] for path in self._files()]

    def add(self, chain: str, name: str, data: bytes) -> None:
        """Keep one encoded segment (fsynced) until :meth:`drain` uploads it."""
        if self.size + len(data) > self.max_bytes:
            raise SpoolFull(f"capture spool {self.directory} is full ({self.max_bytes} bytes)")
        files = self._files()
        sequence = int(files[-1].name.split(".", 1)[0]) + 1 if files else 1
        final = self.directory / f"{sequence:012d}.{chain}.{name}"
        part = final.with_name(final.name + ".part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, final)

    def drain(self, upload: Callable[[str, str, bytes], None]) -> int:
        """Upload every spooled segment in order (``upload(chain, name, data)``); returns how many.

        A segment is removed only after its upload succeeded; a failure stops the drain and
        leaves it (and everything after it) for the next try.
        """
        done = 0
        for path in self._files():
            _sequence, chain, name = path.name.split(".", 2)
            upload(chain, name, path.read_bytes())
            path.unlink()
            done += 1
        return done

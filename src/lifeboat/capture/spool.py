"""A bounded local spool of encoded segments waiting for the repository to come back.

Segments are files named ``<sequence>.<segment name>`` in one directory, uploaded oldest
first. The spool never grows past its limit: :meth:`Spool.add` refuses a segment that would
not fit, and capture then records a gap instead of holding events in memory.

Capture's loop adds segments while its upload thread drains the spool: every look at the
directory and every removal happens under one lock, so neither sees a file the other is
removing; an upload itself runs outside it, so adding never waits for the object store.

One process at a time: :meth:`Spool.claim` holds an ``flock`` on ``.lock`` in the directory
for as long as capture runs. Two processes on one spool (two captures of clusters of the same
name on one host, or a capture started while another still uploads) would number their
segments alike, replace each other's files and upload each other's segments; etcd's capture
lock cannot prevent it, since it is one cluster's, not one directory's. Holding the spool, a
capture also removes the ``.part`` files a killed one left (no live writer can own them).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from lifeboat.durable import flock_or_holder, fsync_dir
from lifeboat.errors import OperationFailed, UsageError


class SpoolFull(OperationFailed):
    """The local spool has no room for another segment: its limit, or its file system (full,
    read-only, failing). The message completes "the repository was unavailable and ..."."""


class SpoolUnreadable(OperationFailed):
    """A spooled segment could not be read back (EIO, a damaged disk): it and what its chain
    spooled after it were set aside (``.unreadable-*``), as they can never be uploaded in order."""

    def __init__(self, message: str, chain: str, name: str) -> None:
        super().__init__(message)
        self.chain = chain
        self.name = name


class SpoolInUse(OperationFailed):
    """Another process holds the spool directory."""


LOCK_NAME = ".lock"


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._held: int | None = None  # the fd of the flock-ed lock file, while claimed
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise UsageError(f"cannot create the capture spool {directory} (--spool-dir or the config file's "
                             f"capture.spool-dir): {exc.strerror}; name a directory capture may write") from None
        self._bytes = self._stored_bytes()

    def _files(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir()
                      if p.is_file() and not p.name.endswith(".part") and not p.name.startswith("."))

    def _stored_bytes(self) -> int:
        total = 0
        for path in self._files():
            try:
                total += path.stat().st_size
            except FileNotFoundError:  # uploaded and removed by the process that holds the spool
                pass
        return total

    def claim(self) -> None:
        """Hold the spool for this process until :meth:`release`, and remove what a killed writer left.

        Raises :class:`SpoolInUse` naming the other process when one holds it.
        """
        fd = flock_or_holder(self.directory / LOCK_NAME)
        if isinstance(fd, str):
            raise SpoolInUse(
                f"the capture spool {self.directory} is in use by another process (pid {fd or 'unknown'}): "
                "two captures on one spool would replace and upload each other's segments; stop it, or give "
                "each capture a spool of its own (--spool-dir, capture.spool-dir)")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._held = fd
        with self._lock:
            stale = [p for p in self.directory.iterdir() if p.name.endswith(".part")]
            for part in stale:  # a killed capture's half-written segment: it never counted as spooled
                part.unlink(missing_ok=True)
            if stale:
                fsync_dir(self.directory)
            self._bytes = self._stored_bytes()

    def _set_aside(self, paths: list[Path]) -> None:
        """Rename ``paths`` out of the spool's sight (kept for a look), best effort."""
        with self._lock:
            for path in paths:
                try:
                    size = path.stat().st_size
                    path.rename(path.with_name(".unreadable-" + path.name))
                except OSError:
                    continue  # the next drain meets it again, and says so again
                self._bytes -= size

    def release(self) -> None:
        """Let another process hold the spool (what is spooled stays)."""
        if self._held is not None:
            os.close(self._held)  # closing the last fd releases the flock
            self._held = None

    @property
    def size(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._files())

    def names(self) -> list[str]:
        """The names of the spooled segments, oldest first."""
        with self._lock:
            return [path.name.split(".", 2)[2] for path in self._files()]

    def add(self, chain: str, name: str, data: bytes) -> None:
        """Keep one encoded segment (fsynced) until :meth:`drain` uploads it."""
        with self._lock:
            if self._bytes + len(data) > self.max_bytes:
                raise SpoolFull(f"the local spool filled up ({self.max_bytes} bytes)")
            files = self._files()
            sequence = int(files[-1].name.split(".", 1)[0]) + 1 if files else 1
            final = self.directory / f"{sequence:012d}.{chain}.{name}"
            try:
                self._write(final, data)
            except OSError as exc:  # ENOSPC, EROFS, EIO: the segment is not kept, as past the limit
                raise SpoolFull(f"the local spool {self.directory} could not be written "
                                f"({exc.strerror or exc})") from None
            self._bytes += len(data)

    def _write(self, final: Path, data: bytes) -> None:
        """``data`` as ``final``, fsynced, or (on OSError) nothing but a ``.part`` removed."""
        part = final.with_name(final.name + ".part")
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(part, final)
            fsync_dir(final.parent)  # the name too: the upload thread counts it as kept from here
        except OSError:
            part.unlink(missing_ok=True)
            raise

    def drain(self, upload: Callable[[str, str, bytes], None]) -> int:
        """Upload every spooled segment in order (``upload(chain, name, data)``); returns how many.

        A segment is removed only after its upload succeeded; a failure stops the drain and
        leaves it (and everything after it) for the next try.
        """
        done = 0
        with self._lock:
            spooled = self._files()
        for index, path in enumerate(spooled):  # only a drain removes files: these stay until it does
            _sequence, chain, name = path.name.split(".", 2)
            try:
                data = path.read_bytes()
            except OSError as exc:
                self._set_aside([p for p in spooled[index:] if p.name.split(".", 2)[1] == chain])
                raise SpoolUnreadable(f"the segment spooled as {path} could not be read back "
                                      f"({exc.strerror or exc})", chain, name) from None
            upload(chain, name, data)
            with self._lock:
                path.unlink()
                self._bytes -= len(data)
            done += 1
        return done

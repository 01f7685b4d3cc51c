"""How commands report: human tables by default, JSON with ``-o json``, progress on a TTY."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from lifeboat.clock import Clock, SystemClock
from lifeboat.config.rules import UNSHOWABLE
from lifeboat.config.secrets import without_secrets
from lifeboat.disk import RoomNeeded


def printable(text: str) -> str:
    """``text`` as a terminal shows it as it is: each control character (a newline, an escape
    sequence, a direction override) written as its escape. For what lifeboat prints that it did
    not write itself: names and values read from etcd or a repository, error messages quoting them."""
    return UNSHOWABLE.sub(_escaped, text)


def _escaped(found: re.Match[str]) -> str:
    code = ord(found[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class PrintableFormatter(logging.Formatter):
    """Log messages on one line each, as :func:`printable` shows them (a traceback after them as it is)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(without_secrets(super().formatMessage(record)))

    def formatException(self, ei: Any) -> str:
        return without_secrets(super().formatException(ei))


def emit_json(data: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    json.dump(data, out, indent=2, sort_keys=True, default=str)
    out.write("\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], out: TextIO | None = None) -> None:
    """Print aligned columns; an empty table prints only the headers."""
    out = out or sys.stdout
    cells = [[str(h) for h in headers]] + [[printable(str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")


class StreamedTable:
    """Aligned columns printed a batch of rows at a time: the header with the first batch,
    each column as wide as the widest cell seen so far."""

    def __init__(self, headers: Sequence[str], out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._pending: list[list[str]] | None = [[str(h) for h in headers]]
        self._widths = [0] * len(headers)

    def rows(self, rows: Sequence[Sequence[object]]) -> None:
        cells = self._pending or []
        self._pending = None
        cells += [[printable(str(c)) for c in row] for row in rows]
        self._widths = [max([w] + [len(r[i]) for r in cells]) for i, w in enumerate(self._widths)]
        for row in cells:
            self._out.write("  ".join(c.ljust(w) for c, w in zip(row, self._widths)).rstrip() + "\n")
        self._out.flush()

    def close(self) -> None:
        """Print the header if no row came."""
        if self._pending is not None:
            self.rows(())


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


class Progress:
    """A one-line progress display on stderr, shown only when stdout is a terminal.

    Redrawn at most every 0.2 s of ``clock``, with the rate since it was made.
    """

    def __init__(self, enabled: bool | None = None, stream: TextIO | None = None, clock: Clock | None = None) -> None:
        self.enabled = sys.stdout.isatty() if enabled is None else enabled
        self.stream = stream or sys.stderr
        self.clock = clock or SystemClock()
        self.started = self.clock.monotonic()
        self.last = 0.0
        self.total: int | None = None

    def __call__(self, stage: str, done: int) -> None:
        if not self.enabled:
            return
        now = self.clock.monotonic()
        if now - self.last < 0.2:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-6)
        of = f" of ~{human_size(self.total)}" if self.total else ""
        self.stream.write(f"\r{stage}: {human_size(done)}{of} ({human_size(int(rate))}/s)   ")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.last:
            self.stream.write("\r" + " " * 72 + "\r")
            self.stream.flush()


class RoomNotes:
    """The disk room an operation says it needs before it starts: with table output each need is
    printed on stdout at once; with JSON it is kept for the result (``"disk"``). stderr stays one
    line, the error, when the operation is refused."""

    def __init__(self, as_json: bool, out: TextIO | None = None) -> None:
        self.quiet = as_json
        self.out = out or sys.stdout
        self.rooms: list[RoomNeeded] = []

    def __call__(self, room: RoomNeeded) -> None:
        self.rooms.append(room)
        if self.quiet:
            return
        try:
            self.out.write(f"{room.text()}\n")
            self.out.flush()
        except BrokenPipeError:
            # `lifeboat backup | head -0`: the reader is gone, the operation goes on; the
            # command's last write meets the closed pipe again and is handled there.
            self.quiet = True

    def to_json(self) -> list[dict[str, object]]:
        return [room.to_dict() for room in self.rooms]

"""Files a user names (flags, config): regular files only, small ones read with a size cap.

A path can name a FIFO, a device or a directory as easily as a file. Read whole, ``/dev/zero``
takes all memory (on a control-plane node the kernel may then kill etcd); opening a FIFO waits
for a writer that never comes. So every such file is opened without blocking and refused,
unread, unless it is a regular file; a small one (a key, a certificate, a config) is read only
up to its cap.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lifeboat.errors import UsageError

SMALL_FILE_MAX = 1 << 20


def open_regular(path: str | os.PathLike[str], what: str) -> int:
    """A read-only descriptor of ``path``; :class:`UsageError` unless it is a regular file.

    ``what`` names the file in the error ("identity file"). An ``OSError`` from opening it is
    the caller's to translate.
    """
    # Not blocking: a FIFO opens at once and is refused below, never waited on (on a regular
    # file the flag changes nothing).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UsageError(f"{what} {Path(path)} is not a regular file")
    return fd


def read_small(path: str | os.PathLike[str], what: str, limit: int = SMALL_FILE_MAX) -> bytes:
    """The content of the regular file ``path``, of at most ``limit`` bytes.

    Every failure is a one-line :class:`UsageError` naming ``what`` and the path, never the
    content (the file may hold a key).
    """
    try:
        with os.fdopen(open_regular(path, what), "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {Path(path)}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > limit:
        raise UsageError(f"{what} {Path(path)} is larger than {_size(limit)}; check the path")
    return data


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 and limit % (1 << 20) == 0 else f"{limit} bytes"

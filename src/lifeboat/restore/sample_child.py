"""The child process of :meth:`lifeboat.restore.content.KeySamples.start_below`:
``python -m lifeboat.restore.sample_child``.

It reads the keys the key sample follows in a fetched base snapshot
(:func:`~lifeboat.restore.content.followed_keys`) while the parent replays captured events
into the same file: on another core, without sharing the parent's interpreter lock. The
request (the file and the transaction whose tree to read) comes pickled through stdin, the
answer (the followed keys, or what went wrong) goes pickled through stdout. Only keys and
file offsets cross the pipe, no value. The child exits when its stdin closes, so a parent
that dies leaves no reader behind.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading

from lifeboat.restore.content import followed_keys
from lifeboat.waits import exit_with_parent


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides on a Ctrl-C
    with os.fdopen(os.dup(0), "rb") as requests:
        path, txid = pickle.load(requests)
    threading.Thread(target=exit_with_parent, args=(0,), name="parent-watch", daemon=True).start()
    try:
        answer: tuple[str, object] = ("result", followed_keys(path, txid=txid))
    except Exception as exc:  # the parent then reads the whole file itself
        answer = ("error", f"{type(exc).__name__}: {exc}")
    with os.fdopen(os.dup(1), "wb") as answers:
        answers.write(pickle.dumps(answer))


if __name__ == "__main__":
    main()

"""A memory store whose capture segments never arrive: for tests of a survey that is still running."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from lifeboat.store.memory import MemoryStore


class StalledStore(MemoryStore):
    """A read of a capture segment waits for good; everything else is a memory store's."""

    def get_stream(self, key: str, chunk_size: int = 4 << 20) -> Iterator[bytes]:
        if "/segments/" in key:
            threading.Event().wait()
        return super().get_stream(key, chunk_size)

"""How slowly an object-store request may go before lifeboat gives up on it.

A store that accepts a request and then sends its answer a byte a second (a broken proxy, a
saturated or failing server) must not hold a backup, a capture upload or a listing for hours;
a slow but live link must still carry a multi-gigabyte snapshot. So no request has a fixed
total time: each may take :attr:`Pace.allowance` seconds plus its size at
:attr:`Pace.min_rate`, and never :attr:`Pace.idle` seconds without a byte. Large objects move
in requests of bounded size (multipart parts, ranges), so a large transfer on a live link is
many requests, each within its limit, whatever its total time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pace:
    """The slowest a request may go: ``allowance`` + size / ``min_rate`` seconds, ``idle`` without a byte."""

    min_rate: int = 32 << 10  # bytes per second over a request (256 kbit/s)
    allowance: float = 30.0  # seconds any request gets besides its bytes: connecting, the store's work
    idle: float = 60.0  # seconds without a byte sent or received

    def limit(self, size: int) -> float:
        """The seconds a request moving ``size`` bytes may take."""
        return self.allowance + size / self.min_rate

    def describe(self, size: int) -> str:
        """The limits of a request of ``size`` bytes, for a message."""
        return (f"lifeboat allows {self.limit(size):.0f} s for this request ({self.allowance:g} s plus "
                f"{self.min_rate // 1024} KiB/s) and {self.idle:g} s without a byte")


DEFAULT_PACE = Pace()

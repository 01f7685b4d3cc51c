"""The progress line is redrawn at most every 0.2 s of its clock, with the rate since it began."""

from __future__ import annotations

import io

from lifeboat.cli.output import Progress
from lifeboat.clock import FakeClock


def test_progress_redraws_at_most_every_fifth_of_a_second_with_the_rate_so_far() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = Progress(enabled=True, stream=out, clock=clock)
    clock.advance(1)
    progress("upload", 2048)
    clock.advance(0.1)
    progress("upload", 4096)  # too soon: not drawn
    clock.advance(0.1)
    progress("upload", 6144)
    lines = out.getvalue().split("\r")[1:]
    assert [line.strip() for line in lines] == ["upload: 2.0 KiB (2.0 KiB/s)", "upload: 6.0 KiB (5.0 KiB/s)"]

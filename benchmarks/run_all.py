"""Run every benchmark in turn (``make bench``); each prints its own table and writes JSON
under ``bench-work/``. They compare lifeboat with the reference tools in the same run, so
the ratios — not the absolute times — are what ``docs/benchmarks.md`` reports.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
SCRIPTS = sorted(p for p in HERE.glob("bench_*.py"))


def main() -> int:
    failed = []
    for script in SCRIPTS:
        print(f"\n### {script.name}", flush=True)
        if run(script) != 0:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def run(script: Path) -> int:
    """Run one script; a SIGTERM or SIGHUP is passed on to it (it cleans up, see ``teardown.py``)
    and ends the whole run once it has; a Ctrl-C reaches it directly and is waited out too."""
    proc = subprocess.Popen([sys.executable, str(script)])

    def pass_on(signum: int, frame: FrameType | None) -> None:
        proc.send_signal(signum)
        stopping.append(signum)

    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, pass_on)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.wait()
        raise
    if stopping:
        raise SystemExit(f"stopped by signal {stopping[0]} during {script.name}")
    return code


if __name__ == "__main__":
    sys.exit(main())

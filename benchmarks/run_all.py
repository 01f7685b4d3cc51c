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
# Scripts run once per shape of data they measure, with these arguments (the others once, bare):
# the point-in-time restore on the Kubernetes-like mix and on the one where every event creates
# a key, each beside a full backup of the point's state.
VARIANTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "bench_pitr.py": (("--end-state",),
                      ("--mix", "creates", "--end-state")),
}


def main() -> int:
    failed = []
    for script in SCRIPTS:
        for args in VARIANTS.get(script.name, ((),)):
            name = " ".join((script.name, *args[:3]))
            print(f"\n### {name}", flush=True)
            if run(script, args) != 0:
                failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def run(script: Path, args: tuple[str, ...] = ()) -> int:
    """Run one script; a SIGTERM or SIGHUP is passed on to it (it cleans up, see ``teardown.py``)
    and ends the whole run once it has; a Ctrl-C reaches it directly and is waited out too."""
    proc = subprocess.Popen([sys.executable, str(script), *args])

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

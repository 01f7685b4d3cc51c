"""Run every benchmark in turn (``make bench``); each prints its own table and writes JSON
under ``bench-work/``. They compare lifeboat with the reference tools in the same run, so
the ratios — not the absolute times — are what ``docs/benchmarks.md`` reports.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = sorted(p for p in HERE.glob("bench_*.py"))


def main() -> int:
    failed = []
    for script in SCRIPTS:
        print(f"\n### {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)]).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Time a streamed upload through ``S3Store.put_stream`` to a local SeaweedFS, vs. raw obstore.

Usage: ``python benchmarks/bench_s3_upload.py [--size-mb 500] [--repeat 3] [--work DIR]``.
Starts ``weed mini`` on free loopback ports, its data in the work dir (emptied first; default
``bench-work/s3-upload-run``), and uploads SIZE MB of fresh 1 MiB chunks (as a
compressing producer hands them over) once per run through lifeboat and once through a bare
``obstore.put`` with obstore's default multipart settings, alternating. Each upload runs in
a new process so its peak RSS (VmHWM) is its own. Prints medians, MB/s, the ratio and the
peak memory, and writes them to ``bench-work/bench_s3_upload.json`` (in the ``--work`` dir when
one other than the default is given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for entry in (REPO, REPO / "src"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from benchmarks.dataset import BENCH_WORK, results_dir, work_dir  # noqa: E402
from benchmarks.teardown import on_termination  # noqa: E402
from tests.support.binaries import weed  # noqa: E402
from tests.support.seaweed import SeaweedServer  # noqa: E402

UPLOAD = """
import json, os, sys, time
import obstore
from obstore.store import S3Store as Client
from lifeboat.store import open_store

def peak_mib():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024

tool, size = sys.argv[1], int(sys.argv[2])
block = os.urandom(1 << 20)
chunks = (memoryview(block).tobytes()[: min(1 << 20, size - i)] for i in range(0, size, 1 << 20))
started = time.perf_counter()
if tool == "lifeboat":
    open_store(os.environ["LIFEBOAT_REPO"]).put_stream("bench/lifeboat", chunks)
else:
    client = Client(os.environ["BUCKET"], endpoint=os.environ["AWS_ENDPOINT_URL"],
                    client_options={"allow_http": True, "timeout": "1h"})
    obstore.put(client, "bench/obstore", chunks)
print(json.dumps({"seconds": time.perf_counter() - started, "peak_mib": peak_mib()}))
"""


def upload(tool: str, size: int, env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", UPLOAD, tool, str(size)], env=env, capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{tool} upload failed: {done.stderr}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=work_dir, default=BENCH_WORK / "s3-upload-run",
                        help="work dir for SeaweedFS's data, emptied first (default bench-work/s3-upload-run)")
    args = parser.parse_args()
    size = args.size_mb * 1_000_000
    work: Path = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    runs: dict[str, list[dict[str, float]]] = {"lifeboat": [], "obstore": []}
    with SeaweedServer(weed(), work / "seaweed") as server:
        s3 = server.s3()
        env = dict(
            os.environ, **s3.env(), BUCKET=s3.bucket, LIFEBOAT_REPO=f"s3://{s3.bucket}",
            PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        )
        for _ in range(args.repeat):
            for tool in runs:
                runs[tool].append(upload(tool, size, env))

    medians = {tool: statistics.median(r["seconds"] for r in measured) for tool, measured in runs.items()}
    result: dict[str, object] = {"size_bytes": size, "repeat": args.repeat, "runs": runs,
                                 "python": platform.python_version(), "cpus": os.cpu_count()}
    for tool, seconds in medians.items():
        peak = max(r["peak_mib"] for r in runs[tool])
        result.update({f"{tool}_median_s": seconds, f"{tool}_mb_per_s": size / 1e6 / seconds,
                       f"{tool}_peak_mib": peak})
        print(f"{tool:9} median {seconds:6.2f}s  {size / 1e6 / seconds:6.0f} MB/s  "
              f"peak RSS {peak:.0f} MiB")
    result["ratio"] = medians["lifeboat"] / medians["obstore"]
    print(f"lifeboat / obstore time ratio {result['ratio']:.2f}x for {args.size_mb} MB")
    out = results_dir(work, BENCH_WORK / "s3-upload-run") / "bench_s3_upload.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(work / "seaweed", ignore_errors=True)  # the uploads: SIZE MB times the runs, twice
    print(f"wrote {out}")


if __name__ == "__main__":
    on_termination()  # SIGTERM cleans up like Ctrl-C
    main()

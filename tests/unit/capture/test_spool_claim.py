"""One process per capture spool, and what a capture killed mid-write leaves there.

A capture killed (SIGKILL, power loss) while writing a segment to the spool left its
``.part`` file for good: nothing ever removed it. And nothing kept two processes off one
spool directory (etcd's capture lock is a cluster's, not a directory's): the one that removes
leftovers must know no live writer owns them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeboat.capture.spool import Spool, SpoolInUse

# Claims the spool, keeps one segment, then writes a second one and stops inside the write
# (its fsync never returns), having said "writing" on stdout: a capture caught mid-write.
WRITER = """
import os, sys, threading
from pathlib import Path
from lifeboat.capture.spool import Spool

spool = Spool(Path(sys.argv[1]), 1 << 20)
spool.claim()
spool.add("chain", "first.seg", b"1" * 1000)

def stuck(fd):
    print("writing", flush=True)
    threading.Event().wait()

os.fsync = stuck
spool.add("chain", "second.seg", b"2" * 5000)
"""


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "spool")],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "writing\n"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def parts(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


def test_a_part_left_by_a_capture_killed_mid_write_is_removed_when_the_next_one_claims_the_spool(
        tmp_path: Path, writer: subprocess.Popen[str]) -> None:
    directory = tmp_path / "spool"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert parts(directory) == ["000000000002.chain.second.seg.part"]

    spool = Spool(directory, 1 << 20)
    spool.claim()

    assert parts(directory) == []
    assert spool.names() == ["first.seg"] and spool.size == 1000
    spool.add("chain", "third.seg", b"3" * 10)
    assert spool.names() == ["first.seg", "third.seg"]
    spool.release()


def test_a_spool_a_live_capture_holds_is_refused_naming_it_and_its_part_is_left_alone(
        tmp_path: Path, writer: subprocess.Popen[str]) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory, 1 << 20)

    with pytest.raises(SpoolInUse) as refused:
        spool.claim()

    assert f"in use by another process (pid {writer.pid})" in str(refused.value)
    assert "--spool-dir" in str(refused.value) and "\n" not in str(refused.value)
    assert parts(directory) == ["000000000002.chain.second.seg.part"]
    writer.kill()
    writer.wait()
    spool.claim()  # the holder's end frees it
    assert parts(directory) == [] and spool.names() == ["first.seg"]
    spool.release()


def test_a_released_spool_can_be_claimed_again_and_its_lock_file_is_no_segment(tmp_path: Path) -> None:
    first = Spool(tmp_path, 1 << 20)
    first.claim()
    first.add("chain", "a.seg", b"a")
    with pytest.raises(SpoolInUse):
        Spool(tmp_path, 1 << 20).claim()
    first.release()

    second = Spool(tmp_path, 1 << 20)
    second.claim()
    assert second.names() == ["a.seg"] and len(second) == 1 and second.size == 1
    second.release()

"""The chain survey in its child process: what crosses the boundary, and that no child outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyrage
import pytest
import zstandard

from lifeboat.catalog.age_keys import load_identities, parse_recipient
from lifeboat.catalog.chains import ChainInfo, ChainStore, segment_name
from lifeboat.catalog.codec import checksummed_frame_end
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.segments import Predecessor
from lifeboat.catalog.timeline import RestorePoint, build_timeline, point_at_revision
from lifeboat.errors import IntegrityError, OperationFailed
from lifeboat.pitr import ChainSurvey
from lifeboat.pitr.survey import survey_request, surveyed_chain
from lifeboat.pitr.replay import stored_rows
from lifeboat.pitr import survey_run
from lifeboat.pitr.survey_run import SURVEY_PRECEDENCE, survey_segments
from lifeboat.store.local import LocalStore
from lifeboat.store.memory import MemoryStore
from lifeboat.store.s3 import S3Store
from tests.support.segment_v2 import encode_segment_v2
from tests.support.stalled_store import StalledStore
from tests.support.zstd_frames import flipped, unchecked_content, without_checksum
from tests.unit.catalog.capture_records import manifest, put, segment

BASE = manifest("20261201T030000Z-aaaaaa", 100, 0)
REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def importable_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child unpickles the test stores: it must find ``tests`` as this process does."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (str(REPO_ROOT), os.environ.get("PYTHONPATH")))))


def chain_repo(store: MemoryStore, encrypt_to: str | None = None) -> tuple[BackupRepository, RestorePoint]:
    """A repository holding a chain of two segments after BASE, and the point at its end."""
    repo = BackupRepository.open(store, create=True)
    chains = ChainStore(store)
    chains.start(ChainInfo(BASE.id, "prod", BASE.id, 100, "c1", BASE.finished_at))
    recipients = [parse_recipient(encrypt_to)] if encrypt_to else []
    first = segment(Predecessor("base", 100, BASE.id), (101, 1, [put(b"/a", b"1", 101, 101, 1)]),
                    (102, 2, [put(b"/b", b"2", 102, 102, 1)]))
    ref = chains.commit_segment(first, recipients, 3)
    second = segment(Predecessor("segment", 102, ref.name), (103, 3, [put(b"/a", b"3", 101, 103, 2)]))
    chains.commit_segment(second, recipients, 3)
    timeline = build_timeline("prod", [BASE], chains.chains("prod"))
    return repo, point_at_revision(timeline, 103)


def gone(pid: int) -> bool:
    """``pid`` has exited (a zombie not yet reaped counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def wait_until(condition: Callable[[], bool], seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_the_child_finds_what_a_survey_in_this_process_finds(tmp_path: Path) -> None:
    repo, point = chain_repo(MemoryStore())
    with ChainSurvey(repo, point, None, tmp_path / "child") as survey:
        facts, runs = survey.result()
    (tmp_path / "here").mkdir()
    here, here_runs = survey_segments(repo.store, surveyed_chain(point), None, tmp_path / "here", lambda stage, done: None)
    assert (facts.events, facts.rows, facts.last_revision, facts.row_bytes) == (3, 2, 103, here.row_bytes)
    assert [(r.path.name, r.starts) for r in runs] == [(r.path.name, r.starts) for r in here_runs]
    assert not (tmp_path / "child").exists(), "closing removes what the child staged"


def test_a_damaged_segment_is_named_through_the_process_boundary(tmp_path: Path) -> None:
    store = MemoryStore()
    repo, point = chain_repo(store)
    key = next(k for k in store.keys() if k.endswith(point.segments[1].name))
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2] ^= 0xFF
    store.delete(key)
    store.put_bytes(key, bytes(data))
    with ChainSurvey(repo, point, None, tmp_path / "work") as survey, \
            pytest.raises(IntegrityError, match="damaged|corrupt") as refused:
        survey.result()
    assert point.segments[1].name in str(refused.value)



def blob_chain_repo(store: MemoryStore, version: int = 3) -> tuple[BackupRepository, RestorePoint, str]:
    """:func:`chain_repo` with a segment holding an incompressible value (zstd stores it in
    blocks of its own, as is), and that segment's key; ``version`` 2: that segment as lifeboat
    wrote it before version 3 (one zstd frame, no index)."""
    repo = BackupRepository.open(store, create=True)
    chains = ChainStore(store)
    chains.start(ChainInfo(BASE.id, "prod", BASE.id, 100, "c1", BASE.finished_at))
    first = chains.commit_segment(segment(Predecessor("base", 100, BASE.id), (101, 1, [put(b"/a", b"1", 101, 101, 1)])),
                                  [], 3)
    blob = segment(Predecessor("segment", 101, first.name), (102, 2, [put(b"/blob", os.urandom(300_000), 102, 102, 1)]))
    if version == 3:
        ref = chains.commit_segment(blob, [], 3)
    else:
        stored = zstandard.ZstdCompressor(write_checksum=True).compress(encode_segment_v2(blob))
        ref = chains.put_encoded("prod", BASE.id, segment_name(blob, False), stored)
    timeline = build_timeline("prod", [BASE], chains.chains("prod"))
    return repo, point_at_revision(timeline, 102), next(k for k in store.keys() if k.endswith(ref.name))


def replaced(store: MemoryStore, key: str, data: bytes) -> None:
    store.delete(key)
    store.put_bytes(key, data)


def refused_naming_the_segment(repo: BackupRepository, point: RestorePoint, work: Path,
                               because: str = "damaged|corrupt") -> None:
    with ChainSurvey(repo, point, None, work) as survey, pytest.raises(IntegrityError, match=because) as refused:
        survey.result()
    assert point.segments[-1].name in str(refused.value)


def test_a_byte_flipped_where_only_the_frames_checksum_notices_is_refused(tmp_path: Path) -> None:
    """The survey takes zstd's content checksum, verified as it decompresses, for the end
    line's sha256: a byte flipped in a block zstd stored as is decodes without other error."""
    store = MemoryStore()
    repo, point, key = blob_chain_repo(store, version=2)
    stored = store.get_bytes(key)
    damaged = flipped(stored, len(stored) // 2)
    assert unchecked_content(damaged) != unchecked_content(stored), "only the checksum tells"
    replaced(store, key, damaged)
    refused_naming_the_segment(repo, point, tmp_path / "work")


def test_a_segment_whose_frame_has_no_checksum_still_gets_its_sha256_checked(tmp_path: Path) -> None:
    store = MemoryStore()
    repo, point, key = blob_chain_repo(store, version=2)
    stored = store.get_bytes(key)
    replaced(store, key, without_checksum(flipped(stored, len(stored) // 2)))
    refused_naming_the_segment(repo, point, tmp_path / "work", "damaged: its sha256 does not match")
    replaced(store, key, without_checksum(stored))
    with ChainSurvey(repo, point, None, tmp_path / "whole") as survey:
        assert survey.result()[0].last_revision == 102, "an undamaged one passes its sha256 check"


def test_a_byte_flipped_in_a_version_3_records_frame_is_refused_when_its_rows_are_read(tmp_path: Path) -> None:
    """The survey reads a version 3 segment's index frame only; the replay decompresses the
    records frame whole, so zstd compares its checksum before any row of it is written."""
    store = MemoryStore()
    repo, point, key = blob_chain_repo(store)
    stored = store.get_bytes(key)
    damaged = flipped(stored, len(stored) // 2)
    replaced(store, key, damaged)
    with ChainSurvey(repo, point, None, tmp_path / "work") as survey:
        _, runs = survey.result()
        with pytest.raises(IntegrityError, match="corrupt|checksum"):
            list(stored_rows(runs))


def test_a_version_3_index_frame_damaged_or_unchecked_is_refused(tmp_path: Path) -> None:
    store = MemoryStore()
    repo, point, key = blob_chain_repo(store)
    stored = store.get_bytes(key)
    index_end = checksummed_frame_end(stored)
    assert index_end is not None and index_end < len(stored)
    unchecked = without_checksum(stored[:index_end])
    for number, damaged in enumerate([flipped(stored, index_end // 2), flipped(stored, index_end - 2),
                                      flipped(unchecked, len(unchecked) // 2) + stored[index_end:]]):
        replaced(store, key, damaged)
        refused_naming_the_segment(repo, point, tmp_path / f"work{number}")
    # An index frame without a checksum: the segment is decompressed whole and its sha256 checked.
    replaced(store, key, unchecked + stored[index_end:])
    with ChainSurvey(repo, point, None, tmp_path / "whole") as survey:
        assert survey.result()[0].last_revision == 102


def test_a_version_3_records_frame_cut_short_or_followed_by_bytes_is_refused(tmp_path: Path) -> None:
    store = MemoryStore()
    repo, point, key = blob_chain_repo(store)
    stored = store.get_bytes(key)
    for number, damaged in enumerate([stored[:-1], stored[:-5000], stored + b"\0"]):
        replaced(store, key, damaged)
        refused_naming_the_segment(repo, point, tmp_path / f"work{number}",
                                   "records are not one whole zstd frame with a checksum")


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_a_segment_cut_short_is_refused(tmp_path: Path, keep: float) -> None:
    store = MemoryStore()
    repo, point, key = blob_chain_repo(store)
    stored = store.get_bytes(key)
    replaced(store, key, stored[:int(len(stored) * keep)])
    refused_naming_the_segment(repo, point, tmp_path / "work")

def test_a_killed_child_is_a_clear_error_and_its_files_are_removed(tmp_path: Path) -> None:
    repo, point = chain_repo(StalledStore())
    with ChainSurvey(repo, point, None, tmp_path / "work") as survey:
        os.kill(survey.pid, signal.SIGKILL)
        with pytest.raises(OperationFailed, match=r"ended without an answer \(killed by signal 9\)"):
            survey.result()
    assert not (tmp_path / "work").exists()


def test_a_ctrl_c_reaches_only_the_parent_which_stops_the_child(tmp_path: Path) -> None:
    repo, point = chain_repo(StalledStore())
    with ChainSurvey(repo, point, None, tmp_path / "work") as survey:
        # A Ctrl-C at the terminal signals the foreground process group: the child is not in it.
        assert os.getpgid(survey.pid) != os.getpgid(0)
    assert gone(survey.pid)
    with pytest.raises(OperationFailed, match="stopped before its segments were surveyed"):
        survey.result()


def test_the_child_runs_ahead_of_the_fetch_when_the_system_lets_it(tmp_path: Path) -> None:
    repo, point = chain_repo(StalledStore())
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    # Root may raise a priority; another user may not, and the child then runs at this one's.
    expected = max(mine - SURVEY_PRECEDENCE, -20) if os.geteuid() == 0 else mine
    with ChainSurvey(repo, point, None, tmp_path / "work") as survey:
        assert wait_until(lambda: b"survey_child" in Path(f"/proc/{survey.pid}/cmdline").read_bytes())
        assert wait_until(lambda: os.getpriority(os.PRIO_PROCESS, survey.pid) == expected)
        tasks = Path(f"/proc/{survey.pid}/task")
        assert wait_until(lambda: len(list(tasks.iterdir())) >= 3), "the fetch threads have started"
        threads = list(tasks.iterdir())
        assert {int(Path(f"{task}/stat").read_text().rsplit(")", 1)[1].split()[16]) for task in threads} \
            == {expected}, "every thread of the child, the fetch threads too"
    assert os.getpriority(os.PRIO_PROCESS, 0) == mine, "the parent keeps its priority"


def test_no_age_identity_is_on_the_childs_command_line_or_in_its_environment(tmp_path: Path) -> None:
    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "age-key.txt"
    key_file.write_text(f"{identity}\n")
    secret = str(identity).encode()
    repo, point = chain_repo(StalledStore(), str(identity.to_public()))
    with ChainSurvey(repo, point, load_identities([str(key_file)]), tmp_path / "work") as survey:
        assert wait_until(lambda: b"survey_child" in Path(f"/proc/{survey.pid}/cmdline").read_bytes())
        assert secret not in Path(f"/proc/{survey.pid}/cmdline").read_bytes()
        assert secret not in Path(f"/proc/{survey.pid}/environ").read_bytes()


def test_the_child_decrypts_with_identities_handed_over_its_pipe(tmp_path: Path) -> None:
    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "age-key.txt"
    key_file.write_text(f"# a comment\n{identity}\n")
    repo, point = chain_repo(MemoryStore(), str(identity.to_public()))
    with ChainSurvey(repo, point, load_identities([str(key_file)]), tmp_path / "work") as survey:
        assert survey.result()[0].events == 3


CHILD_IMPORTS = """
import pickle, sys
import lifeboat.pitr.survey_run  # all that lifeboat.pitr.survey_child imports before it reads its request
pickle.load(sys.stdin.buffer)
print(" ".join(sorted(name for name in sys.modules if name.split(".")[0] in sys.argv[1:] or name in sys.argv[1:])))
"""


def child_imports(request: bytes, *modules: str) -> list[str]:
    """Which of ``modules`` (packages, or single modules) the child has imported once it read ``request``."""
    child = subprocess.run([sys.executable, "-c", CHILD_IMPORTS, *modules], input=request, capture_output=True,
                           check=True, cwd=REPO_ROOT)
    return child.stdout.decode().split()


def s3_store() -> S3Store:
    return S3Store("bucket", "prefix", endpoint="http://127.0.0.1:1", access_key_id="AKIAEXAMPLE",
                   secret_access_key="not-a-secret")


@pytest.mark.parametrize("store", ["local", "s3"])
def test_the_child_imports_no_pydantic_nor_the_config_model(tmp_path: Path, store: str) -> None:
    """pydantic and the config's model took 16 MB of the child's 53 MB of imports: neither its
    modules nor the request it unpickles (a local or an S3 store, the chain's segments) bring them in."""
    repo, point = chain_repo(MemoryStore())
    target = LocalStore(tmp_path / "repo") if store == "local" else s3_store()
    request = survey_request(BackupRepository(target), point, None, tmp_path / "work")
    assert child_imports(request, "pydantic", "croniter") == []


# urllib.request, ssl, email, http.client and xml (with obstore, 12 MB of a local repository's
# child's 36 MB) serve only the S3 store's listing of killed multipart uploads. grpc is etcd's.
NOT_IN_THE_CHILD = ("grpc", "google.protobuf", "ssl", "xml", "email", "http", "urllib.request",
                    "lifeboat.store.s3_uploads")


@pytest.mark.parametrize("store", ["local", "s3"])
def test_the_child_imports_neither_grpc_nor_an_http_client_nor_xml(tmp_path: Path, store: str) -> None:
    repo, point = chain_repo(MemoryStore())
    target = LocalStore(tmp_path / "repo") if store == "local" else s3_store()
    request = survey_request(BackupRepository(target), point, None, tmp_path / "work")
    assert child_imports(request, *NOT_IN_THE_CHILD) == []


def test_the_child_of_a_local_repository_does_not_import_the_s3_store(tmp_path: Path) -> None:
    repo, point = chain_repo(MemoryStore())
    request = survey_request(BackupRepository(LocalStore(tmp_path / "repo")), point, None, tmp_path / "work")
    assert child_imports(request, "obstore", "lifeboat.store.s3") == []


PARENT = """
import sys, time
from pathlib import Path
from tests.unit.pitr.test_survey import chain_repo
from tests.support.segment_v2 import encode_segment_v2
from tests.support.stalled_store import StalledStore
from lifeboat.pitr import ChainSurvey
repo, point = chain_repo(StalledStore())
survey = ChainSurvey(repo, point, None, Path(sys.argv[1]))
print(survey.pid, flush=True)
time.sleep(3600)
"""


def test_a_parent_killed_leaves_no_survey_running(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "work")], stdout=subprocess.PIPE,
                              cwd=REPO_ROOT)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not gone(child)
        parent.kill()
        parent.wait()
        assert wait_until(lambda: gone(child)), "the survey's child outlived its parent"
    finally:
        parent.kill()
        parent.wait()


class SlowStore(MemoryStore):
    """Each read of a capture segment takes 20 ms, as a round trip to a remote store does;
    the most reads seen at once is kept."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = self.most = 0
        self._count = threading.Lock()

    def get_stream(self, key: str, chunk_size: int = 4 << 20) -> Iterator[bytes]:
        if "/segments/" not in key:
            return super().get_stream(key, chunk_size)
        with self._count:
            self.reading += 1
            self.most = max(self.most, self.reading)
        time.sleep(0.02)
        with self._count:
            self.reading -= 1
        return super().get_stream(key, chunk_size)


def many_segments_repo(store: MemoryStore, count: int, value_size: int = 10) -> RestorePoint:
    """A chain of ``count`` one-revision segments after BASE (a quiet cluster's: one a second)."""
    BackupRepository.open(store, create=True)
    chains = ChainStore(store)
    chains.start(ChainInfo(BASE.id, "prod", BASE.id, 100, "c1", BASE.finished_at))
    previous = Predecessor("base", 100, BASE.id)
    for revision in range(101, 101 + count):
        value = os.urandom(value_size)  # incompressible: the stored size is about the value's
        ref = chains.commit_segment(segment(previous, (revision, revision - 100,
                                                       [put(b"/lease/node-%d" % (revision % 7), value, 101,
                                                            revision, revision - 100)])), [], 3)
        previous = Predecessor("segment", revision, ref.name)
    timeline = build_timeline("prod", [BASE], chains.chains("prod"))
    return point_at_revision(timeline, 100 + count)


def test_a_chain_of_many_small_segments_is_fetched_many_at_a_time(tmp_path: Path) -> None:
    store = SlowStore()
    point = many_segments_repo(store, 60)
    facts, runs = survey_segments(store, surveyed_chain(point), None, tmp_path, lambda stage, done: None)
    assert facts.events == 60 and facts.last_revision == 160 and facts.rows == 7
    assert store.most >= 8, f"at most {store.most} segments were read at once: each waits for the one before"
    assert [(r.path.name, r.starts) for r in runs] == sorted((r.path.name, r.starts) for r in runs)


def test_large_segments_are_fetched_no_more_at_a_time_than_the_byte_budget_allows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SlowStore()
    point = many_segments_repo(store, 12, value_size=100_000)
    largest = max(ref.size for ref in point.segments)
    monkeypatch.setattr(survey_run, "FETCH_AHEAD_BYTES", 2 * largest)
    facts, _ = survey_segments(store, surveyed_chain(point), None, tmp_path, lambda stage, done: None)
    assert facts.events == 12 and facts.rows == 7
    assert store.most == 2, f"{store.most} segments of {largest} bytes were read at once, for a budget of two"
    monkeypatch.setattr(survey_run, "FETCH_AHEAD_BYTES", largest // 2)
    (tmp_path / "again").mkdir()
    store.most = 0
    survey_segments(store, surveyed_chain(point), None, tmp_path / "again", lambda stage, done: None)
    assert store.most == 1, "a segment larger than the budget is still fetched, alone"


def test_only_a_few_buffers_grown_for_large_frames_are_kept_for_later_fetches() -> None:
    buffers = survey_run._Buffers()
    taken = [buffers.take() for _ in range(5)]
    for buffer in taken[:4]:
        buffer.data = bytearray(survey_run.LARGE_BUFFER + 1)  # as a large frame grows it
    for buffer in taken:
        buffers.give(buffer)
    kept = [buffers.take() for _ in range(5)]
    large = [buffer for buffer in kept if len(buffer.data) > survey_run.LARGE_BUFFER]
    assert len(large) == survey_run.KEEP_LARGE_BUFFERS and taken[4] in kept


def test_a_damaged_segment_among_many_in_flight_is_refused_by_name_and_nothing_is_left_staged(
        tmp_path: Path) -> None:
    store = MemoryStore()  # the child's: up to 32 of the 60 segments are fetched at once
    point = many_segments_repo(store, 60)
    damaged = point.segments[30]
    key = next(k for k in store.keys() if k.endswith(damaged.name))
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2] ^= 0xFF
    replaced(store, key, bytes(data))
    repo = BackupRepository.open(store)
    with ChainSurvey(repo, point, None, tmp_path / "work") as survey, \
            pytest.raises(IntegrityError, match="damaged|corrupt") as refused:
        survey.result()
    assert damaged.name in str(refused.value)
    assert not (tmp_path / "work").exists(), "every segment staged beside it is removed"

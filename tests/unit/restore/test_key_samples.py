"""The snapshot's key sample, read ahead while the restore tool works, is used only for the same file."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from lifeboat.errors import IntegrityError, SnapshotFormatError
from lifeboat.restore import content
from lifeboat.restore.content import KeySamples
from lifeboat.snapshot import KeyValue


def _kv(value: bytes) -> KeyValue:
    return KeyValue(key=b"/registry/a", value=value, create_revision=1, mod_revision=1, version=1, lease=0)


@pytest.fixture
def sampled(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bytes]]:
    """Every sample_keys call: the thread it ran in and the file's bytes then."""
    calls: list[tuple[str, bytes]] = []

    def fake(path: Path, count: int = 32) -> list[KeyValue]:
        data = Path(path).read_bytes()
        calls.append((threading.current_thread().name, data))
        if data == b"damaged":
            raise SnapshotFormatError(f"{path}: damaged")
        return [_kv(data)]

    monkeypatch.setattr(content, "sample_keys", fake)
    return calls


def test_a_sample_started_ahead_is_taken_once_read(tmp_path: Path, sampled: list[tuple[str, bytes]]) -> None:
    snapshot = tmp_path / "snapshot.db"
    snapshot.write_bytes(b"one")
    samples = KeySamples()
    samples.start(snapshot)
    assert samples.take(snapshot) == [_kv(b"one")]
    assert [thread for thread, _ in sampled] == ["lifeboat-sample"]


def test_a_file_changed_since_the_sample_started_is_sampled_again(tmp_path: Path,
                                                                 sampled: list[tuple[str, bytes]]) -> None:
    snapshot = tmp_path / "snapshot.db"
    snapshot.write_bytes(b"one")
    samples = KeySamples()
    samples.start(snapshot)
    snapshot.write_bytes(b"other")
    os.utime(snapshot, ns=(1, 1))  # a changed mtime, even within the clock's resolution
    assert samples.take(snapshot) == [_kv(b"other")]


def test_without_a_start_the_sample_is_read_when_taken(tmp_path: Path, sampled: list[tuple[str, bytes]]) -> None:
    snapshot = tmp_path / "snapshot.db"
    snapshot.write_bytes(b"one")
    assert KeySamples().take(snapshot) == [_kv(b"one")]
    assert [thread for thread, _ in sampled] == [threading.current_thread().name]


def test_a_sample_that_failed_ahead_fails_the_take(tmp_path: Path, sampled: list[tuple[str, bytes]]) -> None:
    snapshot = tmp_path / "snapshot.db"
    snapshot.write_bytes(b"damaged")
    samples = KeySamples()
    samples.start(snapshot)
    with pytest.raises(SnapshotFormatError, match="damaged"):
        samples.take(snapshot)


def test_a_kept_sample_reads_back_as_it_was_saved_and_only_its_owner_can_read_it(tmp_path: Path) -> None:
    sample = [KeyValue(key=b"/registry/secrets/a\xff", value=bytes(range(256)), create_revision=3,
                       mod_revision=9, version=2, lease=7), _kv(b"")]
    kept = tmp_path / "key-sample.json"
    content.save_sample(kept, sample)
    assert content.load_sample(kept) == sample
    assert kept.stat().st_mode & 0o777 == 0o600


def test_no_kept_sample_reads_as_none_and_a_damaged_one_is_an_error_naming_it(tmp_path: Path) -> None:
    kept = tmp_path / "key-sample.json"
    assert content.load_sample(kept) is None
    kept.write_text('[{"key": "not base64!"}]')
    with pytest.raises(IntegrityError, match="key-sample.json"):
        content.load_sample(kept)

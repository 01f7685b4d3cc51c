"""The ``capture:`` section is validated when the file is loaded."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from lifeboat.capture.packing import DELETE_AFTER, MIN_AGE
from lifeboat.capture.run import capture_options
from lifeboat.config import LifeboatConfig, load_config
from lifeboat.errors import UsageError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lifeboat.yaml"
    path.write_text(text)
    return path


def test_capture_settings_load_with_units(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "capture:\n  enabled: true\n  flush-interval: 500ms\n"
                                        "  segment-max-bytes: 4MiB\n  spool-max-bytes: 1GiB\n"))
    c = config.capture
    assert c.enabled and c.flush_interval == 0.5
    assert (c.segment_max_bytes, c.spool_max_bytes) == (4 << 20, 1 << 30)


def test_capture_defaults_flush_every_second() -> None:
    assert LifeboatConfig().capture.flush_interval == 1.0 and not LifeboatConfig().capture.enabled


def test_capture_reads_etcd_in_passes_half_a_flush_interval_apart_unless_told_live(tmp_path: Path) -> None:
    endpoints = ("http://127.0.0.1:2379",)
    default = capture_options(load_config(write(tmp_path, "capture:\n  flush-interval: 800ms\n")), endpoints, "c")
    assert default.lag == 0.4
    live = capture_options(load_config(write(tmp_path, "capture:\n  watch: live\n")), endpoints, "c")
    assert live.lag == 0.0


def test_pack_waits_default_to_lifeboat_pack_s_and_may_be_zero(tmp_path: Path) -> None:
    defaults = LifeboatConfig().capture
    assert timedelta(seconds=defaults.pack_min_age) == MIN_AGE
    assert timedelta(seconds=defaults.pack_delete_after) == DELETE_AFTER
    for zero in ("0", "0s", "0.0m", "0ms"):
        c = load_config(write(tmp_path, f"capture:\n  pack-min-age: {zero}\n  pack-delete-after: 1h\n")).capture
        assert (c.pack_min_age, c.pack_delete_after) == (0, 3600)


@pytest.mark.parametrize("body, words", [
    ("flush-interval: 0s", "longer than zero"),
    ("flush-interval: 5m", "at most 60s"),
    ("flush-interval: 0.0000001s", "at least 10ms"),  # a watch pass every 50 ns was accepted
    ("flush-interval: 9ms", "at least 10ms"),
    ("segment-max-bytes: 12 apples", "size such as"),
    ("segment-max-bytes: 1KiB", "at least 4KiB"),
    ("spool-max-bytes: 1MiB\n  segment-max-bytes: 2MiB", "at least segment-max-bytes"),
    ("flush-every: 1s", "flush-every"),
    ("watch: sometimes", "passes"),
    ("pack-min-age: -1s", "duration such as"),
    ("pack-min-age: soon", "duration such as"),
    ("pack-delete-after: nan", "duration such as"),
    ("pack-delete-after: .inf", "at most 100 years"),
    ("pack-delete-after: 6000w", "at most 100 years"),
    ("pack-min-age: true", "duration such as"),
])
def test_bad_capture_settings_are_refused_at_load(tmp_path: Path, body: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        load_config(write(tmp_path, f"capture:\n  {body}\n"))

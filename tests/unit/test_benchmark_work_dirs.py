"""The benchmarks' ``--work`` dirs: made absolute, and their default recognised however it is spelled."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.dataset import BENCH_WORK, results_dir, work_dir


def test_a_relative_work_dir_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # bench_repository.py --work bench-work/x handed lifeboat restore a relative --data-dir (refused),
    # bench_restore.py a relative dir to weed, which runs elsewhere.
    monkeypatch.chdir(tmp_path)
    assert work_dir("bench-work/x") == tmp_path.resolve() / "bench-work" / "x"


def test_results_go_to_bench_work_when_the_default_work_dir_is_given_another_way(tmp_path: Path) -> None:
    # The checkout's bench-work is a symlink to the shared datasets: --work bench-work/restore-run,
    # made absolute, is the default work dir all the same.
    (tmp_path / "shared").mkdir()
    (tmp_path / "checkout").mkdir()
    (tmp_path / "checkout" / "bench-work").symlink_to(tmp_path / "shared")
    default = tmp_path / "checkout" / "bench-work" / "restore-run"
    assert results_dir(work_dir(str(default)), default) == BENCH_WORK
    assert results_dir(default, default) == BENCH_WORK
    assert results_dir(tmp_path / "mine", default) == tmp_path / "mine"

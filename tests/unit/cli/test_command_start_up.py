"""A command's run imports only the module that registers it; the parser it gets knows it fully."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from lifeboat.cli import main as main_module
from lifeboat.cli.main import COMMAND_MODULES, build_parser


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_is_listed_with_the_module_that_registers_it() -> None:
    every = _commands(build_parser())
    listed = [command for commands in COMMAND_MODULES.values() for command in commands]
    assert sorted(listed) == sorted(every)
    for command, parser in every.items():
        alone = _commands(build_parser(command))
        assert command in alone
        assert alone[command].format_help() == parser.format_help()


def test_an_unknown_command_gets_the_parser_of_every_command() -> None:
    assert sorted(_commands(build_parser("no-such-command"))) == sorted(_commands(build_parser()))


def test_restore_starts_without_importing_the_agent_capture_or_kubernetes_decoding() -> None:
    probe = ("import sys\nfrom lifeboat.cli.main import build_parser\nbuild_parser('restore')\n"
             "print(' '.join(m for m in ('lifeboat.agent.loop', 'lifeboat.capture.run', 'lifeboat.cli.k8s') "
             "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == ""


_CHURN = """
import resource
from lifeboat.cli.malloc import tune_malloc
tune_malloc()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(200):
    chunk = bytes([i % 251]) * (1 << 20)  # a new 1 MiB piece, written in full, then dropped
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_each_big_chunk_gets_its_own_mapping_returned_when_freed() -> None:
    # So memory stays bounded over any download; the hot paths reuse their buffers instead.
    faults = int(subprocess.run([sys.executable, "-c", _CHURN], capture_output=True, text=True,
                                check=True).stdout)
    assert faults >= 200 * (1 << 20) // 4096 // 2  # most pages of every piece


@pytest.mark.parametrize("command", ["restore", "backup", "list"])
def test_every_command_starts_with_each_big_chunk_in_its_own_mapping(command: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tuned: list[bool] = []
    monkeypatch.setattr(main_module, "tune_malloc", lambda: tuned.append(True))
    assert main_module.main([command, "--help"]) == 0
    assert tuned == [True]

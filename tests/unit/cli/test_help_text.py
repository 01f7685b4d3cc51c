"""Every command's ``--help`` reads exactly as recorded in ``data/help.json``.

The record was rendered from main before the commands' parsers were separated from their
implementations (commit abbb2db), so a parser that lost a flag or a line of help fails here. A
deliberate change of the help re-records it: ``python -m tests.unit.cli.test_help_text``.

The record is argparse's output on Python 3.11 (``RECORDED_ON``), compared exactly there. Later
Pythons' argparse lays the same help out differently (column widths, line breaks, and an
option's metavar written once for all its spellings: ``--config, -c FILE`` for ``--config
FILE, -c FILE``); there the words are compared, with that layout undone (:func:`wording`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeboat.cli.main import build_parser, main

RECORD = Path(__file__).parent / "data" / "help.json"
WIDTH = "100"  # argparse wraps to $COLUMNS
RECORDED_ON = (3, 11)  # the Python whose argparse rendered the record
# An option spelled twice with its metavar after each, as argparse wrote it before 3.13.
_REPEATED_METAVAR = re.compile(r"(?<![\w-])(--?[\w-]+) (\S+), (--?[\w-]+ \2)(?!\S)")


def command_lines(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and subcommand, as the words typed after ``lifeboat``, the top level first."""
    yield words
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from command_lines(sub, (*words, name))


def rendered_help(words: tuple[str, ...]) -> str:
    """What ``lifeboat WORDS --help`` prints, through the same start-up as a real run."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*words, "--help"]) == 0
    return out.getvalue()


def wording(text: str) -> str:
    """``text``'s words, one space apart, each option's metavar after its last spelling only."""
    return " ".join(_REPEATED_METAVAR.sub(r"\1, \3", text).split())


def record() -> dict[str, str]:
    return {" ".join(("lifeboat", *words)): rendered_help(words) for words in command_lines(build_parser())}


@pytest.fixture(autouse=True)
def fixed_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", WIDTH)


def test_every_command_and_subcommand_has_its_recorded_help() -> None:
    recorded = json.loads(RECORD.read_text())
    assert sorted(" ".join(("lifeboat", *words)) for words in command_lines(build_parser())) == sorted(recorded)
    exact = sys.version_info[:2] == RECORDED_ON
    for line, text in recorded.items():
        rendered = rendered_help(tuple(line.split()[1:]))
        if exact:
            assert rendered == text, line
        else:
            assert wording(rendered) == wording(text), line


def test_the_wording_compared_on_other_pythons_still_tells_a_lost_flag_or_metavar() -> None:
    recorded = json.loads(RECORD.read_text())["lifeboat agent"]
    assert wording("  --config, -c FILE     the lifeboat.yaml to run") == \
        wording("  --config FILE, -c FILE\n                        the lifeboat.yaml to run")
    assert wording(recorded.replace("--config FILE, -c FILE", "--config FILE")) != wording(recorded)
    assert wording(recorded.replace("--config FILE, -c FILE", "--config PATH, -c PATH")) != wording(recorded)


if __name__ == "__main__":
    os.environ["COLUMNS"] = WIDTH
    RECORD.parent.mkdir(exist_ok=True)
    RECORD.write_text(json.dumps(record(), indent=1, sort_keys=True, ensure_ascii=False) + "\n")

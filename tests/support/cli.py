"""Running the real ``lifeboat`` entry point in-process, capturing what it printed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lifeboat.cli.main import main


class Cli:
    """``cli("backup", ...)`` → (exit code, stdout, stderr); ``cli.json(...)`` adds ``-o json``."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(list(args))
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> Any:
        """The command's JSON output; it must exit 0."""
        code, out, err = self(*args, "-o", "json")
        assert code == 0, err
        return json.loads(out)

    def json_with_code(self, *args: str) -> tuple[int, dict[str, Any]]:
        """Exit code and JSON document, for commands that report through their exit code."""
        code, out, err = self(*args, "-o", "json")
        assert out, err
        document = json.loads(out)
        assert isinstance(document, dict)
        return code, document

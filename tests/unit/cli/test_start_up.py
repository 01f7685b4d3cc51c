"""A command imports only what it runs: `lifeboat list` starts without grpc, cryptography or the drill,
and no command's --help imports any command's work."""

from __future__ import annotations

import json
import subprocess
import sys

from lifeboat.cli.main import COMMAND_MODULES

HEAVY = ("grpc", "google.protobuf", "cryptography", "prometheus_client", "lifeboat.etcd.client",
         "lifeboat.verify.drill", "lifeboat.restore.steps", "lifeboat.backup.pipeline", "lifeboat.pitr")


def test_list_show_and_delete_start_without_the_heavy_modules() -> None:
    for command in ("list", "show", "delete"):
        probe = ("import json, sys\nfrom lifeboat.cli.main import main\n"
                 f"try:\n    main([{command!r}, '--help'])\nexcept SystemExit:\n    pass\n"
                 f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)")
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
        assert json.loads(done.stderr.strip().splitlines()[-1]) == [], command


def test_a_mistyped_command_still_lists_every_command() -> None:
    done = subprocess.run([sys.executable, "-m", "lifeboat.cli.main", "lsit"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 3
    assert all(command in done.stderr for commands in COMMAND_MODULES.values() for command in commands)


# What building every parser may import: the parsers, the flags they share, and what those name
# (the config's defaults without pydantic). The commands' work is imported only when one runs.
PARSER_MODULES = ("lifeboat", "lifeboat.cli", "lifeboat.cli.main", "lifeboat.cli.malloc", "lifeboat.cli.flags",
                  "lifeboat.cli.writer", "lifeboat.cli.commands", "lifeboat.errors", "lifeboat.lazy",
                  "lifeboat.config", "lifeboat.config.rules", "lifeboat.config.secrets")
# What --help took 1.6 s of CPU and 85 MB for before (grpc, pydantic, the S3 store's HTTP and XML).
NOT_FOR_HELP = ("grpc", "google.protobuf", "pydantic", "croniter", "ssl", "xml", "email", "http", "urllib.request",
                "yaml", "zstandard", "pyrage", "obstore", "cryptography", "prometheus_client")

HELP_OF_EVERY_COMMAND = """
import argparse, json, sys
from lifeboat.cli.main import build_parser, main

def command_lines(parser, words=()):
    yield words
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from command_lines(sub, (*words, name))

for words in command_lines(build_parser()):
    try:
        main([*words, "--help"])
    except SystemExit:
        pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def test_the_help_of_every_command_imports_no_commands_work() -> None:
    done = subprocess.run([sys.executable, "-c", HELP_OF_EVERY_COMMAND], capture_output=True, text=True, timeout=120,
                          check=True)
    loaded = json.loads(done.stderr.strip().splitlines()[-1])
    assert [m for m in loaded if m.startswith("lifeboat") and m not in PARSER_MODULES
            and not m.startswith("lifeboat.cli.commands.")] == []
    assert [m for m in loaded if m in NOT_FOR_HELP or m.split(".")[0] in NOT_FOR_HELP] == []

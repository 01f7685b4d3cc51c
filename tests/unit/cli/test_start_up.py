"""A command imports only what it runs: `lifeboat list` starts without grpc, cryptography or the drill."""

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

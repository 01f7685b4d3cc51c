"""``lifeboat agent --config FILE``: the unattended scheduler (see docs/agent.md)."""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path

from lifeboat.agent.logs import configure_logging
from lifeboat.agent.loop import install_signal_handlers
from lifeboat.agent.runtime import run_agent
from lifeboat.cli.connect import add_command
from lifeboat.config import CONFIG_ENV, resolve_config
from lifeboat.errors import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "agent", cmd_agent)
    p.add_argument("--config", "-c", type=Path, metavar="FILE",
                   help=f"the lifeboat.yaml to run with [${CONFIG_ENV}]")
    p.add_argument("--log-format", choices=("text", "json"),
                   help="log lines as text or one JSON object each (default: agent.log-format)")


def cmd_agent(args: argparse.Namespace) -> int:
    """run scheduled backups, pruning and drills (one active agent per cluster)

    Run until SIGTERM: back up on schedules.backup, prune by the retention policies after each
    backup, drill on schedules.drill. Run one agent per control-plane node: they elect one active
    agent per cluster through an etcd lease, and another takes over within one agent.lease-ttl if it
    dies. Serves /metrics, /healthz and /readyz on agent.listen. SIGTERM abandons a backup in flight
    (no manifest is written) and exits 0.
    """
    path = args.config or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if path is None:
        raise UsageError(f"the agent needs a config file: pass --config FILE or set ${CONFIG_ENV}")
    config = resolve_config(path, os.environ).config
    configure_logging(args.log_format or config.agent.log_format, args.verbose)
    stop = threading.Event()
    install_signal_handlers(stop)
    return run_agent(config, os.environ, stop)

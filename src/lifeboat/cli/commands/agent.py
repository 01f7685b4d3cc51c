"""The parser of ``lifeboat agent``; the agent itself is :mod:`lifeboat.cli.agent`."""

from __future__ import annotations

import argparse
from pathlib import Path

from lifeboat.cli.flags import add_command
from lifeboat.config.rules import CONFIG_ENV


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "agent", cmd_agent)
    p.add_argument("--config", "-c", type=Path, metavar="FILE",
                   help=f"the lifeboat.yaml to run with [${CONFIG_ENV}]")
    p.add_argument("--log-format", choices=("text", "json"),
                   help="log lines as text or one JSON object each (default: agent.log-format)")


def cmd_agent(args: argparse.Namespace) -> int:
    """run scheduled backups, pruning, drills and continuous capture (one active agent per cluster)

    Run until SIGTERM: back up on schedules.backup, prune by the retention policies after each
    backup, drill on schedules.drill; with capture.enabled, capture every change of etcd as
    'lifeboat capture' does and pack its small segments after each backup. Run one agent per
    control-plane node: they elect one active
    agent per cluster through an etcd lease, and another takes over within one agent.lease-ttl if it
    dies. Serves /metrics, /healthz and /readyz on agent.listen. SIGTERM (or SIGINT, SIGHUP) abandons
    a backup in flight (no manifest is written), gives up the lease and exits 0.
    """
    from lifeboat.cli import agent

    return agent.cmd_agent(args)

"""``lifeboat agent --config FILE``: the unattended scheduler (see docs/agent.md)."""

from __future__ import annotations

import argparse
import os
import threading

from lifeboat.agent.logs import configure_logging
from lifeboat.agent.runtime import run_agent
from lifeboat.cli.connect import config_file
from lifeboat.config import CONFIG_ENV, resolve_config
from lifeboat.errors import UsageError
from lifeboat.waits import SERVICE_SIGNALS, stop_on_signals


def cmd_agent(args: argparse.Namespace) -> int:
    """run scheduled backups, pruning, drills and continuous capture (one active agent per cluster)"""
    path = config_file(args)
    if path is None:
        raise UsageError(f"the agent needs a config file: pass --config FILE or set ${CONFIG_ENV}")
    config = resolve_config(path, os.environ).config
    configure_logging(args.log_format or config.agent.log_format, args.verbose)
    stop = threading.Event()
    # SIGHUP too (the agent gives it no other meaning): its default action kills the process
    # with no log line and the lease left to expire, so failover would wait a whole TTL.
    with stop_on_signals(stop, SERVICE_SIGNALS):
        return run_agent(config, os.environ, stop)

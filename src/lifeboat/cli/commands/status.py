"""The parser of ``lifeboat status``; its work is :mod:`lifeboat.cli.status`."""

from __future__ import annotations

import argparse

from lifeboat.cli.flags import add_command, add_etcd_flags, add_repo_flags, add_root_flag


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "status", cmd_status,
                    add_etcd_flags, add_root_flag, add_repo_flags, raw=True)
    p.add_argument("--quota-backend-bytes", type=int, metavar="BYTES",
                   help="etcd's backend quota, to compare db sizes with (default: the etcd static "
                        "pod's flag on a kubeadm node, else etcd's default of 2 GiB)")


def cmd_status(args: argparse.Namespace) -> int:
    """etcd member health, quorum and what to do

    Ask every etcd member for its status, on its own advertised client URLs and on the endpoints
    given: reachable or not (and why), leader, raft term and index, db size against the quota,
    alarms, learners. Then say how many voting members may still fail before quorum is lost and
    what to do, following the decision table in docs/recovery.md:

      every member healthy            nothing to do
      one voting member, broken       restore it from a backup
      HA, quorum intact, some failed  do not restore: lifeboat member replace NAME
      HA, quorum lost                 restore every member from the same backup

    With a repository (--repo, $LIFEBOAT_REPO or the config file's repository.url) the age of
    the newest complete backup is shown too.

    exit codes: 0 every member healthy, 1 degraded or quorum lost (or an alarm raised),
                2 no etcd member answered, 3 usage error
    """
    from lifeboat.cli import status

    return status.cmd_status(args)

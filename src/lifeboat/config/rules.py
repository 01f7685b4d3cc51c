"""Rules and defaults of the config that layers below it share, in a module without pydantic.

Importing :mod:`lifeboat.config.model` or :mod:`lifeboat.config.values` brings in pydantic; the
chain survey's child process (:mod:`lifeboat.pitr.survey_run`) needs these and nothing of the
model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path, PurePath
from urllib.parse import urlsplit

from lifeboat.config.secrets import holds_private_key, shown
from lifeboat.errors import UsageError

# The variables naming the config file and the manifest cache's directory (their flags,
# --config and --cache-dir, are documented where every command's parser is built).
CONFIG_ENV = "LIFEBOAT_CONFIG"
CACHE_DIR_ENV = "LIFEBOAT_CACHE_DIR"
CONFIG_EXAMPLE = "/etc/lifeboat/lifeboat.yaml"
CACHE_DIR_EXAMPLE = "/var/cache/lifeboat"
# The longest duration lifeboat takes: a time that far back is still a date, a timeout that
# long still a number a clock can add (a larger one, or inf, is an operator's slip).
LONGEST_DURATION = timedelta(days=36525)

# zstd level 1: on etcd data it compresses about as well as level 3 at about twice the speed,
# which keeps a backup as fast as `etcdctl snapshot save` (docs/benchmarks.md).
DEFAULT_ZSTD_LEVEL = 1
# Cluster names become object-key segments (lifeboat.catalog.ids checks them with this rule too).
CLUSTER_NAME = re.compile(r"[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?")


def check_endpoint_url(value: str) -> str:
    """An S3 endpoint: ``http(s)://HOST[:PORT][/PATH]``, without credentials in it."""
    text = value.strip()
    try:
        parts = urlsplit(text)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = urlsplit(""), False
    if holds_credentials(text):  # also when the port is no port: the error below quotes the URL
        raise ValueError("must not hold credentials (user:password@); use AWS_ACCESS_KEY_ID and "
                         "AWS_SECRET_ACCESS_KEY")
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or any(
            c.isspace() for c in text):
        raise ValueError(f"must be a URL such as https://s3.example.com or http://127.0.0.1:8333, "
                         f"got {text[:80]!r}")
    return text


# etcd reads no user or password from a URL (its clients authenticate with certificates or
# its auth API): one written there is a password copied where lifeboat would print and record it.
ETCD_URL_CREDENTIALS = ("holds a user or password (user:password@, not shown); etcd takes none "
                        "in a URL: give scheme, host and port only")
ENDPOINT_CREDENTIALS = (f"an endpoint {ETCD_URL_CREDENTIALS}; etcd knows a client by its certificate "
                        "(--cert, --key)")


def endpoint_problem(text: str) -> str | None:
    """Why ``text`` is not an etcd client URL (``https://host:port``, ``http://host:port`` or a
    bare ``host:port``), or None. ``config validate`` and every command check the same way."""
    raw = text.strip()
    if not raw:
        return "an endpoint is empty; give URLs like https://10.0.0.1:2379"
    if holds_credentials(raw):
        return ENDPOINT_CREDENTIALS
    has_scheme = "://" in raw
    try:
        parts = urlsplit(raw if has_scheme else f"//{raw}")
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        return f"{shown(raw)} is not host:port or a URL ({exc})"
    scheme = parts.scheme.lower() if has_scheme else None
    if scheme not in (None, "http", "https"):
        return f"{shown(raw)} uses scheme {shown(scheme)}; use https:// or http://"
    if not parts.hostname:
        return f"{shown(raw)} names no host; give URLs like https://10.0.0.1:2379"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"{shown(raw)} has a path; give only scheme, host and port"
    return None


def holds_credentials(url: str) -> bool:
    """True when ``url`` (``scheme://authority/...`` or a bare ``host:port``) has ``user[:password]@``."""
    authority = url.strip().partition("://")[2] if "://" in url else url.strip()
    return "@" in re.split(r"[/?#]", authority, maxsplit=1)[0]


def not_absolute(text: str, example: str, *, show: bool = True) -> str | None:
    """Why ``text`` is not a path the config, the environment or a file may give, or None.

    The file and the environment serve the agent (systemd starts it in /), cron jobs and
    commands typed in any directory on any node: a relative path would name a different file
    for each. Flags are made absolute where they are typed (``lifeboat.cli.flags``). With
    ``show=False`` a wrong value is not repeated: it may be the secret the file should hold.
    """
    if PurePath(text).is_absolute() and text.strip():
        return None
    got = ("an empty value" if not text.strip() else
           shown(text) if show else "a relative path (not shown)")
    return f"must be an absolute path such as {example}, got {got}"


def path_from_environment(environ: Mapping[str, str], var: str, example: str) -> Path | None:
    """The absolute path ``$var`` names, None when it is unset or empty; UsageError when it is relative."""
    text = environ.get(var)
    if not text:
        return None
    problem = not_absolute(text, example)
    if problem is not None:
        raise UsageError(f"${var}: {problem}")
    return Path(text)


# How an SSH public key line begins: ssh-ed25519 and ssh-rsa (age's SSH recipients), and the
# types age cannot encrypt to (ECDSA, security keys), which are refused as such, not as files.
SSH_PUBLIC_KEY_STARTS = ("ssh-", "ecdsa-sha2-", "sk-")


def names_recipients_file(value: str) -> bool:
    """True when a recipient (``--encrypt-to``, ``encryption.recipients``) names a file of them:
    it is not itself an age recipient (``age1...``) or an SSH public key (``ssh-...``)."""
    return not value.strip().startswith(("age1", *SSH_PUBLIC_KEY_STARTS))


# The schemes a repository URL may name, supported or not (yet): "s3:bucket" or "file:x" is a
# URL mistyped, never a directory of that name.
REPOSITORY_SCHEMES = ("file", "s3", "memory", "gs", "gcs", "az", "azure", "abfs", "abfss")


def repository_url_given(text: str) -> bool:
    """Whether ``--repo``/``repository.url`` is a URL (``scheme://...``, or ``file:/path`` and
    the like) rather than a directory path."""
    named, colon, _ = text.partition(":")
    return "://" in text or bool(colon) and named.lower() in REPOSITORY_SCHEMES


# Characters a terminal acts on instead of showing (escape sequences, a newline that forges the
# next line) and the bidirectional controls that make text read otherwise than it is stored.
UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


LABEL_MAX = 256  # a backup label's name or value, in characters
RESERVED_LABEL_PREFIX = "lifeboat."  # labels lifeboat writes itself (lifeboat.tick, lifeboat.synthetic-*)
PIN_REASON_MAX = 1000


def plain_text_problem(value: str, limit: int) -> str | None:
    """Why ``value`` cannot be kept as text that ``show`` and ``list`` print (a pin's reason, a
    label), or None: one line of at most ``limit`` characters a terminal shows as they are."""
    if UNSHOWABLE.search(value):
        return "holds a control character (a newline, an escape sequence or a direction override); give one line of text"
    if holds_private_key(value):  # labels and pin reasons are stored in the clear, and shown
        return "looks like a private key (not shown); it would be stored in the clear: leave it out"
    try:
        value.encode("utf-8")  # a byte the command line gave that is no UTF-8 (a surrogate escape)
    except UnicodeEncodeError:
        return "holds bytes that are not UTF-8 text (Latin-1?); give UTF-8 text"
    if len(value) > limit:
        return f"is {len(value)} characters long; at most {limit}"
    return None

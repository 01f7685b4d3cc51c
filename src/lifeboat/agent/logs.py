"""The agent's log lines: plain text, or one JSON object per line for log collectors.

A JSON line has ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message`` and the
``extra`` fields the agent adds (``event``, ``reason``, ``backup_id``, ...).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Literal

from lifeboat.config.secrets import without_secrets

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": without_secrets(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = _field(value)
        if record.exc_info:
            line["exception"] = without_secrets(self.formatException(record.exc_info))
        return json.dumps(line)


def _field(value: object) -> object:
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return without_secrets(str(value))


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return without_secrets(super().format(record))


def configure_logging(form: Literal["json", "text"], verbose: bool = False) -> None:
    """Send the agent's logs to stderr in ``form``; INFO and up (DEBUG with ``verbose``)."""
    handler = logging.StreamHandler(sys.stderr)
    if form == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # grpc and the object store are chatty below WARNING; their failures reach us as errors.
    for noisy in ("grpc", "urllib3", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

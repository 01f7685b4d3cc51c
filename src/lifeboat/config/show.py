"""What ``lifeboat config show`` prints: every value, where it came from, no secret values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lifeboat.config.credentials import credentials_source
from lifeboat.config.load import ResolvedConfig
from lifeboat.config.model import kebab

_URL_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", re.IGNORECASE)


@dataclass(frozen=True)
class ShownValue:
    key: str
    value: Any  # JSON-ready; secrets replaced by a description
    origin: str


def shown_values(resolved: ResolvedConfig, environ: Mapping[str, str]) -> list[ShownValue]:
    """One row per config key, in file order, plus where S3 credentials come from."""
    rows = [
        ShownValue(key, _plain(key, value), str(resolved.origin(key)))
        for key, value in _walk(resolved.config)
    ]
    s3_origin = "env" if environ.get("AWS_ACCESS_KEY_ID") else (
        str(resolved.origin("repository.s3.access-key-id-file")))
    rows.append(ShownValue("repository.s3.credentials",
                           credentials_source(resolved.config, environ), s3_origin))
    return rows


def _walk(model: BaseModel, prefix: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for name in type(model).model_fields:
        key, value = prefix + kebab(name), getattr(model, name)
        found += _walk(value, key + ".") if isinstance(value, BaseModel) else [(key, value)]
    return found


def _plain(key: str, value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_plain(key, item) for item in value]
    if isinstance(value, str) and key == "repository.url":
        # The URL should never carry credentials (open_store refuses them); mask any anyway.
        return _URL_USERINFO.sub(r"\1***@", value)
    return value

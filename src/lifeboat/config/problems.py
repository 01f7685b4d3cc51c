"""Turn pydantic's validation errors into one-line messages that name the key and its source."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from lifeboat.config.model import LifeboatConfig, kebab
from lifeboat.config.secrets import shown

_SECRET_HINT = {
    "access-key-id": "access-key-id-file",
    "secret-access-key": "secret-access-key-file",
    "session-token": "session-token-file",
    "identity": "identity-files",
    "identities": "identity-files",
}


def key_path(loc: Sequence[int | str]) -> str:
    """``("encryption", "recipients", 2)`` as ``encryption.recipients[2]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def describe(error: ErrorDetails) -> str:
    """What is wrong with one value, without the key path. Never echoes an unknown key's value."""
    kind = error["type"]
    got = shown(error.get("input"))
    if kind == "extra_forbidden":
        return _unknown_key(error["loc"])
    if kind == "missing":
        return "is missing"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer, got {got}"
    if kind == "enum":
        return f"must be one of {error.get('ctx', {}).get('expected')}, got {got}"
    if kind in ("value_error", "assertion_error"):
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, got {got}"
    if kind == "string_type":
        return f"must be a string, got {got}"
    if kind == "list_type":
        return f"must be a list, got {got}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping of keys, got {got}"
    if kind == "literal_error":
        return f"must be one of {error.get('ctx', {}).get('expected')}, got {got}"
    if kind in ("path_type", "path_parsing"):
        return f"must be a file path, got {got}"
    message = error["msg"]
    return f"{message[:1].lower()}{message[1:]}, got {got}"


def translate(exc: ValidationError, where: Callable[[tuple[int | str, ...]], str]) -> str:
    """All of ``exc``'s problems, each as ``<where(loc)>: <what is wrong>``, joined by ``; ``."""
    lines = [f"{where(tuple(e['loc']))}: {describe(e)}" for e in exc.errors()]
    return "; ".join(lines)


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    name = str(loc[-1])
    model = _model_at(loc[:-1])
    known = [kebab(n) for n in model.model_fields] if model else []
    if name in _SECRET_HINT:
        return (f"unknown key: secrets are never read from the config file; use the AWS_* "
                f"environment variables or {_SECRET_HINT[name]}")
    if kebab(name) in known and kebab(name) != name:
        return f"unknown key; did you mean {kebab(name)}?"
    return "unknown key" + (f"; expected one of {', '.join(known)}" if known else "")


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    model: type[BaseModel] = LifeboatConfig
    for part in loc:
        fields = {kebab(n): f for n, f in model.model_fields.items()}
        field = fields.get(str(part))
        if field is None:
            return None
        candidates = [field.annotation, *get_args(field.annotation)]
        found = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not found:
            return None
        model = found[0]
    return model

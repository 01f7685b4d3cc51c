"""Load ``lifeboat.yaml`` and layer it with environment variables and flags, tracking origins.

Precedence, highest first: command-line flags, environment (``LIFEBOAT_*``, ``ETCDCTL_*``,
``AWS_*``), the config file, built-in defaults. Every value, whatever its source, is
validated by the same model, and a bad one is a :class:`~lifeboat.errors.UsageError`
naming where it came from: ``lifeboat.yaml: retention.keep-last: ...``,
``$ETCDCTL_DIAL_TIMEOUT (etcd.dial-timeout): ...`` or ``--zstd-level: ...``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from lifeboat.config.model import LifeboatConfig, kebab
from lifeboat.config.problems import key_path, translate
from lifeboat.config.yaml_nesting import NestingLimitedLoader
from lifeboat.errors import UsageError
from lifeboat.regular_files import read_small

ENV_KEYS: dict[str, str] = {
    "LIFEBOAT_CLUSTER": "cluster",
    "LIFEBOAT_ROOT": "root",
    "LIFEBOAT_REPO": "repository.url",
    "ETCDCTL_ENDPOINTS": "etcd.endpoints",
    "ETCDCTL_CACERT": "etcd.cacert",
    "ETCDCTL_CERT": "etcd.cert",
    "ETCDCTL_KEY": "etcd.key",
    "ETCDCTL_DIAL_TIMEOUT": "etcd.dial-timeout",
    "ETCDCTL_COMMAND_TIMEOUT": "etcd.command-timeout",
    "AWS_DEFAULT_REGION": "repository.s3.region",
    "AWS_REGION": "repository.s3.region",  # after AWS_DEFAULT_REGION: it wins, as in the AWS SDKs
    "AWS_ENDPOINT_URL": "repository.s3.endpoint-url",
}
"""Environment variables that set a config key (empty values are ignored, as etcdctl does)."""


@dataclass(frozen=True)
class Origin:
    """Where a value came from: ``default``, ``file`` (its path), ``env`` ($VAR) or ``flag``."""

    kind: Literal["default", "file", "env", "flag"]
    name: str = ""

    def __str__(self) -> str:
        return self.kind if self.kind == "default" else f"{self.kind} {self.name}"


@dataclass(frozen=True)
class FlagValue:
    """A value given on the command line, with the flag that gave it (for messages)."""

    flag: str
    value: object


def load_config(path: Path) -> LifeboatConfig:
    """Read and validate one config file (file over defaults; no environment, no flags)."""
    return _validate_file(path)[0]


def resolve_config(
    path: Path | None,
    environ: Mapping[str, str],
    flags: Mapping[str, FlagValue] | None = None,
) -> ResolvedConfig:
    """Layer defaults, the file at ``path`` (if any), ``environ`` and ``flags``; validate all.

    ``flags`` maps dotted keys (``etcd.endpoints``, ``backup.zstd-level``) to the values the
    user typed; the CLI leaves out flags that were not given.
    """
    leaves: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    if path is not None:
        _, given = _validate_file(path)
        leaves.update(given)
        origins.update(dict.fromkeys(given, Origin("file", str(path))))
    for var, key in ENV_KEYS.items():
        if environ.get(var):
            leaves[key] = environ[var]
            origins[key] = Origin("env", f"${var}")
    for key, given_flag in (flags or {}).items():
        leaves[key] = given_flag.value
        origins[key] = Origin("flag", given_flag.flag)
    try:
        config = LifeboatConfig.model_validate(_nest(leaves))
    except ValidationError as exc:
        raise UsageError(translate(exc, lambda loc: _where(loc, origins))) from None
    for key in _leaves(config):
        origins.setdefault(key, Origin("default"))
    return ResolvedConfig(config, origins, path)


@dataclass(frozen=True)
class ResolvedConfig:
    """The validated config and the origin of every key (dotted, kebab-case)."""

    config: LifeboatConfig
    origins: Mapping[str, Origin]
    path: Path | None

    def origin(self, key: str) -> Origin:
        return self.origins.get(key, Origin("default"))

    def is_set(self, key: str) -> bool:
        """True when ``key`` came from a file, the environment or a flag."""
        return self.origin(key).kind != "default"


def _where(loc: tuple[int | str, ...], origins: Mapping[str, Origin]) -> str:
    path = key_path(loc)
    for depth in range(len(loc), 0, -1):
        origin = origins.get(key_path(loc[:depth]))
        if origin is None:
            continue
        if origin.kind == "file":
            return f"{origin.name}: {path}"
        if origin.kind == "env":
            return f"{origin.name} ({path})"
        return origin.name
    return path


def _validate_file(path: Path) -> tuple[LifeboatConfig, dict[str, Any]]:
    """The file's config and the leaves it set explicitly."""
    data = _read_yaml(path)
    try:
        config = LifeboatConfig.model_validate(data)
    except ValidationError as exc:
        raise UsageError(translate(exc, lambda loc: f"{path}: {key_path(loc)}")) from None
    return config, _set_leaves(config)


def _read_yaml(path: Path) -> dict[str, Any]:
    raw = read_small(path, "config file")  # a lifeboat config is a few KiB
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise UsageError(f"{path}: not valid YAML{at}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: must be a mapping of keys (cluster:, etcd:, ...), "
                         f"got a {type(data).__name__}")
    return data


class _StrictLoader(NestingLimitedLoader):
    """SafeLoader that refuses a key given twice (plain PyYAML keeps the last one silently),
    a key that is not a plain value (a list or mapping: no key of the file is one), nesting
    past ``MAX_NESTING`` and any alias: a few hundred bytes of nested aliases (a "billion
    laughs") expand to gigabytes.
    """

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a lifeboat config; write the value out", mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain name, not a list or a mapping", key_node.start_mark
                )
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _set_leaves(model: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of the values set explicitly in ``model`` (sections are walked into)."""
    found: dict[str, Any] = {}
    for name in model.model_fields_set:
        key = prefix + kebab(name)
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            found.update(_set_leaves(value, key + "."))
        else:
            found[key] = value
    return found


def _leaves(model: BaseModel, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name in type(model).model_fields:
        key = prefix + kebab(name)
        value = getattr(model, name)
        keys += _leaves(value, key + ".") if isinstance(value, BaseModel) else [key]
    return keys


def _nest(leaves: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in leaves.items():
        *sections, last = key.split(".")
        target = nested
        for section in sections:
            target = target.setdefault(section, {})
        target[last] = value
    return nested

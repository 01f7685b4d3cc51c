"""Packages whose ``__init__`` imports none of their modules: each name is imported when first asked for.

A package's ``__init__`` runs for every import of any of its modules; one that imports the
whole package makes each of them pay for all (:mod:`lifeboat.config` would bring pydantic into
the chain survey's child process). Such a package names its exports under ``TYPE_CHECKING``
(what mypy checks) and, at run time only, sets ``__getattr__ = lazy_exports(__name__, {...})``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports each name from the module ``where`` gives."""

    def exported(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(where[name]), name)

    return exported

"""The type check of a decoded JSON or YAML document's field, for every reader of one in ``kube``.

A reader names the field and says how a wrong type is reported (a usage error for the
operator's own file, a malformed-object error for what etcd stored); the check is this one.
JSON and YAML decode objects to ``dict``, arrays to ``list``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# (where, the type it should have been) -> the error to raise
Fail = Callable[[str, type], Exception]


def checked(value: object, kind: type[T], where: str, fail: Fail) -> T:
    """``value`` if it is a ``kind``, else ``fail``'s error."""
    if not isinstance(value, kind):
        raise fail(where, kind)
    return value

"""Turn retention settings (``keep-last=7``, or a config mapping) into policy objects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lifeboat.errors import UsageError
from lifeboat.retention.periodic import KeepDaily, KeepHourly, KeepMonthly, KeepWeekly, KeepYearly
from lifeboat.retention.policies import KeepLast, KeepWithin, Policy, RecoveryWindow

POLICY_CLASSES: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (
        KeepLast,
        KeepWithin,
        KeepHourly,
        KeepDaily,
        KeepWeekly,
        KeepMonthly,
        KeepYearly,
        RecoveryWindow,
    )
}


def policy_from(key: str, value: object) -> Policy:
    """The policy named ``key`` (``keep_last`` is read as ``keep-last``) with ``value``."""
    cls = POLICY_CLASSES.get(key.strip().lower().replace("_", "-"))
    if cls is None:
        raise UsageError(
            f"unknown retention policy {key}={value}; "
            f"use one of {', '.join(POLICY_CLASSES)}"
        )
    return cls.parse(value)


def parse_policy(text: str) -> Policy:
    """Parse one ``name=value`` spec, e.g. ``keep-daily=7`` or ``recovery-window=7d``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(
            f"retention policy {text!r} is not name=value; write e.g. keep-last=7"
        )
    return policy_from(key, value)


def parse_policies(specs: str | Iterable[str] | Mapping[str, object]) -> list[Policy]:
    """Parse a whole retention setting into policies, in the order given.

    Accepts ``"keep-last=7,keep-daily=7"``, a list of such specs, or a mapping such
    as ``{"keep-last": 7, "recovery-window": "7d"}``. An empty setting and a policy
    named twice are refused: pruning with no policy would keep almost nothing.
    """
    if isinstance(specs, Mapping):
        policies = [policy_from(str(key), value) for key, value in specs.items()]
    else:
        items = specs.split(",") if isinstance(specs, str) else list(specs)
        policies = [parse_policy(item) for item in items if item.strip()]
    if not policies:
        raise UsageError("no retention policy given; set at least one, e.g. keep-last=7")
    names = [policy.name for policy in policies]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(f"retention policy {name} is given more than once; keep one")
    return policies

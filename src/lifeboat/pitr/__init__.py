"""Point-in-time recovery: a snapshot of the cluster at any captured revision or time.

The newest base backup at or before the point, plus the capture segments after it replayed
offline into its MVCC store (see :mod:`lifeboat.pitr.replay`). ``restore``, ``verify --drill``
and the ``k8s`` commands use the resulting snapshot file like any backup's.

Importing the package imports none of its modules: each name is imported when first asked for,
so that the chain survey's child process (``python -m lifeboat.pitr.survey_child``) imports only
what it runs, not the replay's writer and the snapshot verifier.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lifeboat.lazy import lazy_exports

if TYPE_CHECKING:
    from lifeboat.pitr.point import PointSnapshot, PointTarget, build_point_snapshot, find_point, parse_time
    from lifeboat.pitr.survey import ChainSurvey

_WHERE = {
    "ChainSurvey": "lifeboat.pitr.survey",
    "PointSnapshot": "lifeboat.pitr.point",
    "PointTarget": "lifeboat.pitr.point",
    "build_point_snapshot": "lifeboat.pitr.point",
    "find_point": "lifeboat.pitr.point",
    "parse_time": "lifeboat.pitr.point",
}

if not TYPE_CHECKING:  # mypy sees the imports above, and refuses a name they do not give
    __getattr__ = lazy_exports(__name__, _WHERE)


__all__ = ["ChainSurvey", "PointSnapshot", "PointTarget", "build_point_snapshot", "find_point", "parse_time"]

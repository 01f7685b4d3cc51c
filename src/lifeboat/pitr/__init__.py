"""Point-in-time recovery: a snapshot of the cluster at any captured revision or time.

The newest base backup at or before the point, plus the capture segments after it replayed
offline into its MVCC store (see :mod:`lifeboat.pitr.replay`). ``restore``, ``verify --drill``
and the ``k8s`` commands use the resulting snapshot file like any backup's.
"""

from lifeboat.pitr.point import PointSnapshot, PointTarget, build_point_snapshot, find_point, parse_time
from lifeboat.pitr.survey import ChainSurvey

__all__ = ["ChainSurvey", "PointSnapshot", "PointTarget", "build_point_snapshot", "find_point", "parse_time"]

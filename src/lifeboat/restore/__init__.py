"""Restoring etcd members from a backup: the pure plan, the journaled steps, the supervisors.

``lifeboat restore`` plans (:mod:`~lifeboat.restore.plan`), then runs the plan's steps
(:mod:`~lifeboat.restore.steps`) through an executor that journals each finished step so a
re-run resumes. Stopping and starting etcd and kube-apiserver goes through a
:class:`~lifeboat.restore.supervisor.Supervisor`. Whether to restore at all, and member
replacement, are :mod:`lifeboat.recovery`.
"""

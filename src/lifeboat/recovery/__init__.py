"""Recovering a cluster without restoring it: how healthy it is, what to do, replacing a member.

``lifeboat status`` reads :mod:`~lifeboat.recovery.health` and prints the action
:mod:`~lifeboat.recovery.decision` chooses from etcd's rules (one member: restore it; quorum
kept: replace the failed members; quorum lost: restore them all). ``lifeboat member replace``
is :mod:`~lifeboat.recovery.member_replace`. A full restore from a backup is :mod:`lifeboat.restore`.
"""

"""Proving a backup: checks of its stored objects (``lifeboat verify``) and drills.

:mod:`~lifeboat.verify.backup` checks every stored object against the manifest and the
snapshot against etcd's own status answers. Drills (``verify --drill``,
:mod:`~lifeboat.verify.drill`) live here on purpose: a drill is a verification that restores
the backup into a throwaway etcd and compares; it uses etcd's binaries
(:mod:`lifeboat.etcd.binaries`, :mod:`lifeboat.etcd.local`), not :mod:`lifeboat.restore`.
"""

"""etcd's API as data: the protobuf messages lifeboat exchanges with etcd and stores, and the
immutable values (:class:`KeyValue`, :class:`Member`, ...) read from them.

This is the layer below both ways of reading etcd — :mod:`lifeboat.etcd` (a live member over
gRPC) and :mod:`lifeboat.snapshot` (a snapshot file offline) — so both hand out the same
values without importing each other. It mirrors the module etcd itself keeps for its API
types (``go.etcd.io/etcd/api/v3``: ``mvccpb``, ``etcdserverpb``). ``proto/`` is generated
by ``make proto`` from the ``.proto`` files beside it.
"""

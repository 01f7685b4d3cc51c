"""Putting a namespace's objects back into a live etcd: a pure plan, then its execution.

The plan writes the exact bytes a source holds, each key only if the live store lacks
it, the Namespace object first and owners before the objects they own: the garbage
collector deletes an object whose owner it cannot find, so a Pod written before its
ReplicaSet could be collected again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from lifeboat.errors import NotFound, OperationFailed
from lifeboat.kube.inventory.kinds import KindQuery
from lifeboat.kube.inventory.listing import Entry, select
from lifeboat.kube.objects import EncryptionConfiguration, unreadable_reason

Action = Literal["write", "skip"]

EXISTS = "exists in the live cluster; never overwritten"
LEASED = "was attached to an etcd lease (expiring object such as an Event); not restored"
UNRECOGNISED = "key layout not recognised; not restored (write it by hand if needed)"
APPEARED = "appeared in the live cluster after planning; left as it is"
UNREADABLE = ("the live kube-apiserver (whose configuration --encryption-config gives) could not read it back; "
              "add that key to its encryption configuration (as a later provider), restart it and run undelete again")
ENCRYPTED_UNCHECKED = ("stored encrypted at rest with {provider} key {key!r}, written as stored: kube-apiserver reads "
                       "it only if its encryption configuration still holds that key (pass it with --encryption-config "
                       "to have this checked)")
KMS_UNCHECKED = "encrypted with a KMS plugin the live configuration has; whether the plugin still holds its key is not checked"


@dataclass(frozen=True)
class UndeleteStep:
    """One key of the source: write it, or skip it and why; notes say what to expect."""

    entry: Entry
    action: Action
    reason: str = ""
    notes: tuple[str, ...] = ()

    @property
    def key(self) -> bytes:
        return self.entry.kv.key


@dataclass(frozen=True)
class UndeletePlan:
    """Each chosen key of a namespace in the source, in write order (the Namespace, owners before
    what they own): write it, or skip it and why."""

    namespace: str
    steps: tuple[UndeleteStep, ...]

    @property
    def writes(self) -> list[UndeleteStep]:
        return [s for s in self.steps if s.action == "write"]

    @property
    def skips(self) -> list[UndeleteStep]:
        return [s for s in self.steps if s.action == "skip"]


@dataclass
class UndeleteResult:
    written: list[UndeleteStep] = field(default_factory=list)
    skipped: list[UndeleteStep] = field(default_factory=list)


def plan_undelete(
    source: Iterable[Entry], live_keys: set[bytes], namespace: str, *,
    kind: KindQuery | None = None, name: str | None = None, source_name: str = "the source",
    live_encryption: EncryptionConfiguration | None = None,
) -> UndeletePlan:
    """Which of ``namespace``'s objects in ``source`` to write back, in order.

    The Namespace object is always part of the plan (skipped when it exists). Raises
    NotFound when the source holds neither the namespace nor any object in it. A value
    encrypted at rest is skipped when ``live_encryption`` (the live kube-apiserver's
    configuration) could not read it, and noted as unchecked without one.
    """
    in_namespace = list(select(source, namespace))
    if not in_namespace:
        raise NotFound(f"namespace {namespace!r} is not in {source_name}; list its namespaces "
                       "with `lifeboat k8s ls SOURCE`")
    ns_entries = [e for e in in_namespace if e.namespace is None]
    chosen = [e for e in select(in_namespace, kind=kind, name=name) if e.namespace is not None]
    if not chosen and (kind is not None or name is not None):
        what = " ".join(x for x in (kind.text if kind else "", name or "") if x)
        raise NotFound(f"no {what} in namespace {namespace!r} of {source_name}")
    restored_uids = {e.uid for e in ns_entries + chosen if e.uid}
    def step(entry: Entry) -> UndeleteStep:
        return _step(entry, live_keys, restored_uids, live_encryption)

    steps = [step(e) for e in ns_entries]
    _refuse_a_terminating_namespace(steps, namespace, source_name)
    by_uid = {e.uid: e for e in chosen if e.uid}
    steps += sorted((step(e) for e in chosen),
                    key=lambda s: (_owner_depth(s.entry, by_uid), s.key))
    return UndeletePlan(namespace, tuple(steps))


def _refuse_a_terminating_namespace(steps: Sequence[UndeleteStep], namespace: str, source_name: str) -> None:
    """A Namespace object written back while it was being deleted makes Kubernetes' namespace
    controller finish the deletion: every object written with it would be deleted again."""
    for step in steps:
        meta = step.entry.obj.metadata
        if step.action == "write" and meta is not None and meta.deletion_timestamp is not None:
            when = meta.deletion_timestamp.strftime("%Y-%m-%dT%H:%M:%SZ")
            raise OperationFailed(
                f"namespace {namespace!r} was already being deleted in {source_name} (since {when}): written "
                "back, Kubernetes would delete it and every object written with it again; undelete from a "
                "backup (or --to-time) taken before the deletion started, or create the namespace first "
                f"(kubectl create namespace {namespace}): its objects are then written into it"
            )


def _step(entry: Entry, live_keys: set[bytes], restored_uids: set[str],
          live_encryption: EncryptionConfiguration | None) -> UndeleteStep:
    if entry.kv.key in live_keys:
        return UndeleteStep(entry, "skip", EXISTS)
    if entry.kv.lease:
        return UndeleteStep(entry, "skip", LEASED)
    resource = entry.obj.resource
    if resource is None or not resource.recognised:
        return UndeleteStep(entry, "skip", UNRECOGNISED)
    notes = _notes(entry, restored_uids)
    info = entry.obj.encryption
    if info is not None and live_encryption is None:
        notes += (ENCRYPTED_UNCHECKED.format(provider=info.provider, key=info.key_name),)
    elif info is not None and live_encryption is not None:
        why = unreadable_reason(entry.kv.value, entry.kv.key, live_encryption, resource.group, resource.resource)
        if why is not None:
            return UndeleteStep(entry, "skip", f"{why}: {UNREADABLE}")
        if info.provider == "kms":
            notes += (KMS_UNCHECKED,)
    return UndeleteStep(entry, "write", notes=notes)


def _notes(entry: Entry, restored_uids: set[str]) -> tuple[str, ...]:
    meta = entry.obj.metadata
    notes: list[str] = []
    if entry.obj.error is not None:
        notes.append(f"not decodable ({entry.obj.error}); written back as stored")
    if meta is None:
        return tuple(notes)
    if meta.deletion_timestamp is not None:
        notes.append("was already being deleted when the source was taken; "
                     "Kubernetes will finish deleting it")
    for owner in meta.owner_references:
        if owner.uid not in restored_uids:
            notes.append(f"owner {owner.kind}/{owner.name} is not part of this undelete; "
                         "the garbage collector deletes it unless that owner exists")
    return tuple(notes)


def _owner_depth(entry: Entry, by_uid: Mapping[str, Entry]) -> int:
    """How many owners up the chain (first owner each time) lie among the chosen, ``by_uid``."""
    depth, current, seen = 0, entry, {entry.uid}
    while current.obj.metadata is not None:
        owners = [by_uid[o.uid] for o in current.obj.metadata.owner_references
                  if o.uid in by_uid and o.uid not in seen]
        if not owners:
            break
        current = owners[0]
        seen.add(current.uid)
        depth += 1
    return depth


def execute_plan(plan: UndeletePlan, put_if_absent: Callable[[bytes, bytes], bool]) -> UndeleteResult:
    """Write each planned key with a create-only transaction, in plan order."""
    result = UndeleteResult()
    for step in plan.writes:
        if put_if_absent(step.key, step.entry.kv.value):
            result.written.append(step)
        else:
            result.skipped.append(UndeleteStep(step.entry, "skip", APPEARED))
    return result

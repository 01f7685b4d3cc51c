"""A synthetic backup is never less encrypted than the chain it is written from."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyrage
import pytest

from lifeboat.backup.pipeline import BackupOptions
from lifeboat.backup.synthetic import synthesize
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.timeline import RestorePoint, build_timeline
from lifeboat.errors import UsageError
from lifeboat.store.memory import MemoryStore
from tests.unit.catalog.capture_records import chain, manifest, ref

RECIPIENT = str(pyrage.x25519.Identity.generate().to_public())


@pytest.mark.parametrize("encrypted", ["base", "segments"])
def test_synthesizing_an_encrypted_chain_without_a_recipient_is_refused_before_any_read(
        tmp_path: Path, encrypted: str) -> None:
    """`lifeboat synthesize -i key.txt` (no --encrypt-to, no encryption.recipients) of an encrypted
    chain wrote the cluster's whole state, Secrets included, as an unencrypted backup; prune
    then folded the chain, and the encrypted base and segments went."""
    base = manifest("20261201T030000Z-aaaaaa", 100, 0)
    segment = ref(101, 150, 1, 2)
    if encrypted == "base":
        base = base.model_copy(update={"encryption": "age", "recipients": (RECIPIENT,)})
    else:
        segment = dataclasses.replace(segment, name=segment.name + ".age")
    listing = chain(base, [segment])
    (window,) = build_timeline("prod", [base], [listing]).windows
    point = RestorePoint(150, window, (segment,))
    store = MemoryStore()  # holds nothing: the refusal comes before any read
    repo = BackupRepository.open(store, create=True)
    with pytest.raises(UsageError) as caught:
        synthesize(repo, point, None, BackupOptions(cluster="prod", endpoints=(), tmp_dir=tmp_path))
    message = str(caught.value)
    assert "encrypt" in message and "--encrypt-to" in message and "unencrypted" in message
    if encrypted == "base":
        assert RECIPIENT in message  # the recipients to give, public keys
    assert [o.key for o in store.list("clusters/")] == []

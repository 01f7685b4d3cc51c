"""age recipients (public, recorded in manifests) and identities (secret, never logged)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage

from lifeboat.errors import UsageError


@dataclass(frozen=True)
class Recipient:
    """A public key a backup is encrypted to: ``age1...`` or an SSH public key line."""

    text: str
    key: Any  # pyrage recipient object


@dataclass(frozen=True)
class Identity:
    """A private key that can decrypt backups. Its repr never shows the secret."""

    source: str  # the file it came from
    key: Any

    def __repr__(self) -> str:
        return f"Identity(source={self.source!r})"


def parse_recipient(text: str) -> Recipient:
    """Parse one recipient string; a bad one is a UsageError naming it."""
    text = text.strip()
    try:
        if text.startswith("age1"):
            return Recipient(text, pyrage.x25519.Recipient.from_str(text))
        if text.startswith(("ssh-ed25519 ", "ssh-rsa ")):
            return Recipient(text, pyrage.ssh.Recipient.from_str(text))
    except (pyrage.RecipientError, ValueError):
        pass
    raise UsageError(
        f"--encrypt-to {text[:60]!r} is not an age recipient (age1...) or SSH public key, "
        "nor a readable recipients file"
    )


def load_recipients(values: list[str]) -> list[Recipient]:
    """Each value is a recipient string or a file of them (one per line, # comments)."""
    found: list[Recipient] = []
    for value in values:
        path = Path(value)
        if not value.startswith(("age1", "ssh-")) and path.is_file():
            try:
                lines = path.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"cannot read recipients file {value}: {exc}") from None
            found += [parse_recipient(ln) for ln in lines if ln.strip() and not ln.startswith("#")]
        else:
            found.append(parse_recipient(value))
    return found


def load_identities(paths: list[str]) -> list[Identity]:
    """Read age identity files (AGE-SECRET-KEY-1... lines) or unencrypted SSH private keys."""
    identities: list[Identity] = []
    for value in paths:
        try:
            data = Path(value).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read identity file {value}: {exc.strerror}") from None
        identities += _parse_identity_file(value, data)
    return identities


def _parse_identity_file(source: str, data: bytes) -> list[Identity]:
    if b"PRIVATE KEY-----" in data:
        try:
            return [Identity(source, pyrage.ssh.Identity.from_buffer(data))]
        except (pyrage.IdentityError, ValueError):
            raise UsageError(f"identity file {source} is not a usable SSH private key") from None
    found = []
    for line in data.decode(errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(Identity(source, pyrage.x25519.Identity.from_str(line)))
        except (pyrage.IdentityError, ValueError):
            # Never echo the line: it may be a secret key with a typo.
            raise UsageError(f"identity file {source} has a line that is not an age identity") from None
    if not found:
        raise UsageError(f"identity file {source} holds no age identity")
    return found

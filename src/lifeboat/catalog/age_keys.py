"""age recipients (public, recorded in manifests) and identities (secret, never logged)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import pyrage

from lifeboat.config.rules import SSH_PUBLIC_KEY_STARTS, names_recipients_file
from lifeboat.config.secrets import USE_THE_PUBLIC_KEY, WRITE_IT_TO_A_FILE, looks_like_secret, shown
from lifeboat.errors import UsageError
from lifeboat.regular_files import read_small


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
    material: bytes = field(default=b"", compare=False)  # what it was parsed from (secret)

    def __repr__(self) -> str:
        return f"Identity(source={self.source!r})"


def identity_material(identity: Identity) -> tuple[str, bytes]:
    """What :func:`identities_from_material` reads ``identity`` back from, in another process.

    Secret: hand it over only through a pipe or memory, never a command line or a file."""
    return identity.source, identity.material


def identities_from_material(materials: Sequence[tuple[str, bytes]]) -> list[Identity]:
    """The identities :func:`identity_material` gave, parsed again."""
    return [found for source, data in materials for found in _parse_identity_file(source, data)]


def parse_recipient(text: str, where: str = "recipient") -> Recipient:
    """Parse one recipient string; a bad one is a UsageError naming ``where``.

    A private key given here is recognised and refused without any of its characters in the
    message; other bad values are shown only when they look like the public keys they should be.
    """
    text = text.strip()
    if looks_like_secret(text):
        raise UsageError(f"{where} is a private key (age identity or SSH private key), not a recipient; "
                         f"the key is not shown; {USE_THE_PUBLIC_KEY}")
    try:
        if text.startswith("age1"):
            return Recipient(text, pyrage.x25519.Recipient.from_str(text))
        if text.startswith(("ssh-ed25519 ", "ssh-rsa ")):
            return Recipient(text, pyrage.ssh.Recipient.from_str(text))
    except (pyrage.RecipientError, ValueError):
        pass
    kind = text.split(maxsplit=1)[0] if text else ""
    if kind.startswith(SSH_PUBLIC_KEY_STARTS) and kind not in ("ssh-ed25519", "ssh-rsa"):
        raise UsageError(f"{where} is an SSH public key of type {kind}, which age cannot encrypt to; "
                         "use an ssh-ed25519 or ssh-rsa key, or an age1... recipient")
    value = shown(text) if text.startswith(("age1", "ssh-")) else "(value not shown)"
    raise UsageError(
        f"{where} {value} is not an age recipient (age1...) or SSH public key, nor a readable recipients file"
    )


def load_recipients(values: list[str]) -> list[Recipient]:
    """Each value is a recipient string or a file of them (one per line, # comments)."""
    found: list[Recipient] = []
    for value in values:
        path = Path(value)
        # A path that exists is read as a recipients file, even when it is no regular file: a
        # device, FIFO or directory is refused as such, not as a recipient string.
        if names_recipients_file(value) and not looks_like_secret(value) and path.exists():
            found += _recipients_file(path)
        else:
            found.append(parse_recipient(value, "--encrypt-to / encryption.recipients value"))
    return found


def _recipients_file(path: Path) -> list[Recipient]:
    data = read_small(path, "recipients file")  # a few public keys: 1 MiB is plenty
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise UsageError(f"cannot read recipients file {path}: not UTF-8 text") from None
    if looks_like_secret(text):
        raise UsageError(f"recipients file {path} holds a private key (age identity or SSH private key), "
                         f"not recipients; its content is not shown; {USE_THE_PUBLIC_KEY}")
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            found.append(parse_recipient(line, f"recipients file {path} line {number}"))
    if not found:  # taken as no recipient at all, the backups would be stored unencrypted
        raise UsageError(f"recipients file {path} holds no recipient; put the age1... or ssh-... public keys "
                         "in it, one a line")
    return found


def load_identities(paths: list[str]) -> list[Identity]:
    """Read age identity files (AGE-SECRET-KEY-1... lines) or unencrypted SSH private keys."""
    identities: list[Identity] = []
    for value in paths:
        if looks_like_secret(value):
            raise UsageError(f"an identity file's path is a private key itself; the value is not shown; "
                             f"{WRITE_IT_TO_A_FILE}")
        # An identity file holds a few keys (an SSH RSA key of 16384 bits is under 13 KiB):
        # read_small's 1 MiB is plenty, and refuses a FIFO or /dev/zero unread.
        identities += _parse_identity_file(value, read_small(value, "identity file"))
    return identities


# How age begins a file it encrypted (binary, and armored): an identity file kept encrypted
# with a passphrase (``age -p``), which the age tool asks for and lifeboat, unattended, cannot.
AGE_FILE_STARTS = (b"age-encryption.org/v1\n", b"-----BEGIN AGE ENCRYPTED FILE-----")
LOCKED_ADVICE = "lifeboat cannot ask for a passphrase; give it a copy that needs none, readable only by its owner"


def _parse_identity_file(source: str, data: bytes) -> list[Identity]:
    if data.lstrip().startswith(AGE_FILE_STARTS):
        raise UsageError(f"identity file {source} is itself encrypted (age -p); {LOCKED_ADVICE} "
                         "(age -d -o FILE)")
    if b"PRIVATE KEY-----" in data:
        try:
            return [Identity(source, pyrage.ssh.Identity.from_buffer(data), data)]
        except (pyrage.IdentityError, ValueError):
            if _ssh_key_locked(data):
                raise UsageError(f"identity file {source} is an SSH private key protected by a passphrase; "
                                 f"{LOCKED_ADVICE} (ssh-keygen -p on a copy)") from None
            raise UsageError(f"identity file {source} is not a usable SSH private key") from None
    found = []
    for line in data.decode(errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(Identity(source, pyrage.x25519.Identity.from_str(line), line.encode()))
        except (pyrage.IdentityError, ValueError):
            # Never echo the line: it may be a secret key with a typo.
            raise UsageError(f"identity file {source} has a line that is not an age identity") from None
    if not found:
        raise UsageError(f"identity file {source} holds no age identity")
    return found


def _ssh_key_locked(data: bytes) -> bool:
    """Whether an SSH private key file is encrypted: an OpenSSH key whose cipher is not
    ``none`` (PROTOCOL.key: magic, then the cipher's name), or a PEM key with a DEK-Info."""
    if b"Proc-Type: 4,ENCRYPTED" in data:
        return True
    body = b"".join(line for line in data.splitlines() if line and not line.startswith(b"-----"))
    try:
        blob = base64.b64decode(body, validate=False)
    except (ValueError, binascii.Error):
        return False
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic) or len(blob) < len(magic) + 4:
        return False
    size = int.from_bytes(blob[len(magic):len(magic) + 4], "big")
    return blob[len(magic) + 4:len(magic) + 4 + size] != b"none"

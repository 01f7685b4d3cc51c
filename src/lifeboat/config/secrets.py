"""What a secret looks like, so that no message, log line or table shows one.

lifeboat never asks for a secret where a public value belongs, but users paste them there
(an age identity given as a recipient is the classic). Every place that echoes a value a
user gave passes it through :func:`shown` first.
"""

from __future__ import annotations

import re
from pathlib import PurePath

# age identities: native X25519 ones ("AGE-SECRET-KEY-1" and Bech32, age's format spec) and
# plugin ones ("AGE-PLUGIN-<NAME>-1..."); and any PEM or OpenSSH private key block.
_SECRET = re.compile(r"AGE-SECRET-KEY-|AGE-PLUGIN-[A-Z0-9]+-1|PRIVATE KEY", re.IGNORECASE)


def looks_like_secret(text: str) -> bool:
    """True when ``text`` holds (part of) an age identity or a private key."""
    return _SECRET.search(text) is not None


# The text of a private key inside a longer message: an age identity (Bech32, in either case) or a
# PEM / OpenSSH block from its BEGIN line to its END line, or to the end of the text when cut.
_SECRET_TEXT = re.compile(
    r"AGE-SECRET-KEY-1[0-9A-Z]*|AGE-PLUGIN-[A-Z0-9]+-1[0-9A-Z]*"
    r"|-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    re.IGNORECASE | re.DOTALL,
)


def holds_private_key(text: str) -> bool:
    """True when free text (a label, a pin's reason) holds an age identity or a PEM key block;
    unlike :func:`looks_like_secret`, words such as "private key" alone are not one."""
    return _SECRET_TEXT.search(text) is not None


def without_secrets(text: str) -> str:
    """``text`` with every private key in it replaced by a placeholder.

    The last guard of every error and log line: a message that quotes what the user gave
    (a cluster name, a duration, a backup id) must not show a key pasted there by mistake.
    """
    return _SECRET_TEXT.sub("(a private key, not shown)", text)


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, or a placeholder when it looks like a secret."""
    text = repr(value)
    if looks_like_secret(text):
        return "(a value that looks like a private key; not shown)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# What to do when a private key is given where a public recipient belongs.
USE_THE_PUBLIC_KEY = ("give its public key instead ('age-keygen -y KEYFILE' prints an age identity's, "
                      "'ssh-keygen -y -f KEYFILE' an SSH key's)")


def public_recipient(value: str) -> str:
    """A recipient as the config holds it (``age1...``, an SSH public key or a file): never a private key."""
    if looks_like_secret(value):
        raise ValueError(f"is a private key (age identity or SSH private key), not a recipient; "
                         f"the value is not shown; {USE_THE_PUBLIC_KEY}")
    return value


# What to do when a private key is given where the path of a file holding one belongs.
WRITE_IT_TO_A_FILE = ("write it to a file only you can read (mode 0600) and give that file's path")


def identity_path(value: object) -> object:
    """An identity file's path as the config holds it: never the private key itself."""
    if isinstance(value, str | PurePath) and looks_like_secret(str(value)):
        raise ValueError(f"is a private key itself, not the path of a file that holds one; the value is not "
                         f"shown; {WRITE_IT_TO_A_FILE}")
    return value

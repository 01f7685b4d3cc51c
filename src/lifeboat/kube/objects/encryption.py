"""Kubernetes encryption at rest: reading EncryptionConfiguration and decrypting values.

Facts from k8s.io/apiserver (pkg/storage/value/encrypt/{aes,secretbox},
pkg/server/options/encryptionconfig): an encrypted value is
``k8s:enc:<provider>:v1:<key name>:`` followed by the provider's payload, where

- aescbc:    16-byte IV, then AES-CBC ciphertext with PKCS#7 padding;
- aesgcm:    12-byte nonce, then AES-GCM ciphertext and tag, authenticating the full
             etcd key (``/registry/secrets/ns/name``) as additional data;
- secretbox: 24-byte nonce, then NaCl secretbox (XSalsa20-Poly1305) output;
- kms:       ``k8s:enc:kms:v1:<plugin>:`` or ``k8s:enc:kms:v2:<plugin>:``, a data key
             wrapped by an external KMS: not decryptable offline.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.secret
import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lifeboat.config.yaml_nesting import NestingLimitedLoader
from lifeboat.errors import DecryptionError, IntegrityError, UsageError
from lifeboat.kube.objects.checks import checked
from lifeboat.kube.objects.envelope import PROTOBUF_MAGIC
from lifeboat.kube.objects.wire import malformed
from lifeboat.regular_files import read_small

ENCRYPTED_PREFIX = b"k8s:enc:"
LOCAL_PROVIDERS = ("aescbc", "aesgcm", "secretbox")
_KEY_SIZES = {"aescbc": (16, 24, 32), "aesgcm": (16, 24, 32), "secretbox": (32,)}
_AES_BLOCK = 16
_GCM_NONCE = 12
_SECRETBOX_NONCE = nacl.secret.SecretBox.NONCE_SIZE
_CONFIG_KINDS = {
    ("apiserver.config.k8s.io/v1", "EncryptionConfiguration"),
    ("v1", "EncryptionConfig"),  # the pre-1.13 spelling, still accepted by kube-apiserver
}


@dataclass(frozen=True)
class EncryptionKey:
    """One named key of an aescbc, aesgcm or secretbox provider."""

    name: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class Provider:
    """One entry of ``providers``: its type, keys (local providers) or plugin name (kms)."""

    kind: str
    keys: tuple[EncryptionKey, ...] = ()
    name: str = ""


@dataclass(frozen=True)
class ResourceRule:
    """One entry of ``resources``: which resources it covers and its providers, in order."""

    resources: tuple[str, ...]
    providers: tuple[Provider, ...]

    def applies_to(self, group: str, resource: str) -> bool:
        """Whether this rule covers ``resource.group`` (``secrets``, ``*.apps``, ``*.*``)."""
        for entry in self.resources:
            res, _, grp = entry.partition(".")
            if res in ("*", resource) and grp in ("*", group):
                return True
        return False


@dataclass(frozen=True)
class EncryptionConfiguration:
    """The kube-apiserver's ``--encryption-provider-config``."""

    rules: tuple[ResourceRule, ...]

    @classmethod
    def from_document(cls, doc: object) -> EncryptionConfiguration:
        """Validate a parsed EncryptionConfiguration document."""
        top = _config_mapping(doc, "the document")
        if (top.get("apiVersion"), top.get("kind")) not in _CONFIG_KINDS:
            raise UsageError(
                "encryption configuration is not apiVersion apiserver.config.k8s.io/v1 "
                "kind EncryptionConfiguration; pass the kube-apiserver's "
                "--encryption-provider-config file"
            )
        return cls(tuple(_parse_rule(r) for r in _config_list(top, "resources")))


def load_encryption_configuration(path: Path) -> EncryptionConfiguration:
    """Read and validate an EncryptionConfiguration YAML file."""
    # The file holds a few keys: the 1 MiB cap refuses /dev/zero unread.
    data = read_small(path, "encryption configuration")
    try:
        doc = yaml.load(data.decode("utf-8"), Loader=NestingLimitedLoader)  # noqa: S506 - a SafeLoader
    except UnicodeDecodeError:
        raise UsageError(f"encryption configuration {path} is not valid YAML") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise UsageError(f"encryption configuration {path} is not valid YAML ({problem})") from None
    return EncryptionConfiguration.from_document(doc)


@dataclass(frozen=True)
class EncryptionInfo:
    """How a value was encrypted, read from its prefix (never needs a key)."""

    provider: str
    version: str
    key_name: str


def identify_encryption(value: bytes) -> EncryptionInfo | None:
    """The provider, format version and key name of an encrypted value; None if plain."""
    if not value.startswith(ENCRYPTED_PREFIX):
        return None
    # A key name may itself contain ':'; without a configuration we cut at the first one.
    parts = value[len(ENCRYPTED_PREFIX) :].split(b":", 3)
    if len(parts) < 4:
        raise malformed("encrypted value has an incomplete k8s:enc: prefix")
    try:
        provider, version, key_name = (p.decode("ascii") for p in parts[:3])
    except UnicodeDecodeError:
        raise malformed("encrypted value has a non-ASCII k8s:enc: prefix") from None
    return EncryptionInfo(provider, version, key_name)


def decrypt_value(
    value: bytes,
    etcd_key: bytes,
    config: EncryptionConfiguration,
    group: str | None = None,
    resource: str | None = None,
) -> tuple[EncryptionInfo, bytes]:
    """Decrypt a ``k8s:enc:`` value; return how it was encrypted and the plaintext.

    Keys of rules covering ``resource.group`` are tried first, then every other key of
    the same provider and name. Raises DecryptionError for KMS, unknown key names and
    wrong keys.
    """
    info = identify_encryption(value)
    if info is None:
        raise malformed("value is not encrypted")
    if info.provider == "kms":
        raise DecryptionError(
            f"value is encrypted with KMS {info.version} plugin {info.key_name!r}: "
            "not decryptable offline; read it through a kube-apiserver with that plugin"
        )
    if info.provider not in LOCAL_PROVIDERS:
        raise DecryptionError(f"unknown encryption provider {info.provider!r} in value prefix")
    tried = 0
    for key, prefix in _candidate_keys(value, info.provider, config, group, resource):
        tried += 1
        plaintext = _try_decrypt(info.provider, key.secret, value[len(prefix) :], etcd_key)
        if plaintext is not None:
            return EncryptionInfo(info.provider, info.version, key.name), plaintext
    if tried == 0:
        raise DecryptionError(
            f"no {info.provider} key named {info.key_name!r} in the encryption configuration; "
            "pass the configuration that was in force when the value was written"
        )
    raise DecryptionError(
        f"{info.provider} key {info.key_name!r} did not decrypt the value (wrong key?); "
        "pass the configuration that was in force when the value was written"
    )


def unreadable_reason(value: bytes, etcd_key: bytes, config: EncryptionConfiguration,
                      group: str, resource: str) -> str | None:
    """Why a kube-apiserver started with ``config`` could not read the stored ``value`` of
    ``resource.group`` (None: it could, or it is a KMS value whose plugin it has, whose key
    cannot be checked offline).

    kube-apiserver reads a resource with the providers of the first rule covering it, and
    each provider with its own keys only: a key kept under another rule does not help.
    """
    info = identify_encryption(value)
    if info is None:
        return None
    what = f"encrypted at rest with {info.provider} key {info.key_name!r}"
    label = f"{resource}.{group}" if group else resource
    rule = next((r for r in config.rules if r.applies_to(group, resource)), None)
    if rule is None:
        return f"{what}, but no rule of the encryption configuration covers {label}"
    if info.provider == "kms":
        if any(p.kind == "kms" and p.name == info.key_name for p in rule.providers):
            return None
        return f"{what}, but the encryption configuration's rule for {label} has no KMS plugin of that name"
    for entry in rule.providers:
        for key in entry.keys if entry.kind == info.provider else ():
            prefix = f"k8s:enc:{info.provider}:v1:{key.name}:".encode()
            try:
                if value.startswith(prefix) and _try_decrypt(info.provider, key.secret, value[len(prefix):],
                                                             etcd_key) is not None:
                    return None
            except IntegrityError:
                return f"{what}, but the value is corrupt"
    return f"{what}, which the encryption configuration's rule for {label} does not hold"


def _candidate_keys(
    value: bytes,
    provider: str,
    config: EncryptionConfiguration,
    group: str | None,
    resource: str | None,
) -> Iterator[tuple[EncryptionKey, bytes]]:
    def rules_first() -> Iterator[ResourceRule]:
        if resource is not None:
            yield from (r for r in config.rules if r.applies_to(group or "", resource))
            yield from (r for r in config.rules if not r.applies_to(group or "", resource))
        else:
            yield from config.rules

    seen: set[tuple[str, bytes]] = set()
    for rule in rules_first():
        for entry in rule.providers:
            if entry.kind != provider:
                continue
            for key in entry.keys:
                prefix = f"k8s:enc:{provider}:v1:{key.name}:".encode()
                if value.startswith(prefix) and (key.name, key.secret) not in seen:
                    seen.add((key.name, key.secret))
                    yield key, prefix


def _try_decrypt(provider: str, secret: bytes, payload: bytes, etcd_key: bytes) -> bytes | None:
    """The plaintext, or None if this key does not open the payload."""
    if provider == "aesgcm":
        if len(payload) < _GCM_NONCE:
            raise IntegrityError("aesgcm value is shorter than its nonce; the value is corrupt")
        try:
            return AESGCM(secret).decrypt(payload[:_GCM_NONCE], payload[_GCM_NONCE:], etcd_key)
        except InvalidTag:
            return None
    if provider == "secretbox":
        if len(payload) < _SECRETBOX_NONCE:
            raise IntegrityError("secretbox value is shorter than its nonce; the value is corrupt")
        box = nacl.secret.SecretBox(secret)
        try:
            return box.decrypt(payload[_SECRETBOX_NONCE:], payload[:_SECRETBOX_NONCE])
        except nacl.exceptions.CryptoError:
            return None
    return _decrypt_cbc(secret, payload)


def _decrypt_cbc(secret: bytes, payload: bytes) -> bytes | None:
    if len(payload) < 2 * _AES_BLOCK or len(payload) % _AES_BLOCK:
        raise IntegrityError("aescbc value is not IV plus whole AES blocks; the value is corrupt")
    decryptor = Cipher(algorithms.AES(secret), modes.CBC(payload[:_AES_BLOCK])).decryptor()
    padded = decryptor.update(payload[_AES_BLOCK:]) + decryptor.finalize()
    pad = padded[-1]
    if not 1 <= pad <= _AES_BLOCK or padded[-pad:] != bytes([pad]) * pad:
        return None
    plaintext = padded[:-pad]
    # CBC has no authentication: a wrong key passes the padding check 1 time in ~256.
    # Everything the API server stores begins with the protobuf magic or a JSON object.
    if not (plaintext.startswith(PROTOBUF_MAGIC) or plaintext.startswith(b"{")):
        return None
    return plaintext


def _parse_rule(doc: object) -> ResourceRule:
    rule = _config_mapping(doc, "resources[]")
    names = tuple(
        _config_str(r, "resources[].resources[]") for r in _config_list(rule, "resources")
    )
    providers = tuple(_parse_provider(p) for p in _config_list(rule, "providers"))
    return ResourceRule(names, providers)


def _parse_provider(doc: object) -> Provider:
    entry = _config_mapping(doc, "providers[]")
    if len(entry) != 1:
        raise UsageError("encryption configuration: each providers[] entry names one provider")
    ((kind, body),) = entry.items()
    settings = _config_mapping(body if body is not None else {}, f"providers[].{kind}")
    if kind == "kms":
        return Provider("kms", name=_config_str(settings.get("name", ""), "kms.name"))
    if kind not in _KEY_SIZES:
        return Provider(str(kind))
    keys = tuple(_parse_key(kind, k) for k in _config_list(settings, "keys"))
    return Provider(kind, keys=keys)


def _parse_key(provider: str, doc: object) -> EncryptionKey:
    key = _config_mapping(doc, f"{provider}.keys[]")
    name = _config_str(key.get("name"), f"{provider}.keys[].name")
    try:
        secret = base64.b64decode(
            _config_str(key.get("secret"), f"{provider} key {name!r}"), validate=True
        )
    except (binascii.Error, ValueError):
        raise UsageError(
            f"encryption configuration: {provider} key {name!r} is not valid base64"
        ) from None
    if len(secret) not in _KEY_SIZES[provider]:
        sizes = "/".join(str(s) for s in _KEY_SIZES[provider])
        raise UsageError(
            f"encryption configuration: {provider} key {name!r} is {len(secret)} bytes, "
            f"must be {sizes}"
        )
    return EncryptionKey(name, secret)


def _wrong_type(where: str, kind: type) -> UsageError:
    return UsageError(f"encryption configuration: {where} must be a {'mapping' if kind is dict else 'list'}")


def _config_mapping(value: object, what: str) -> dict[str, Any]:
    return checked(value, dict, what, _wrong_type)


def _config_list(doc: Mapping[str, Any], key: str) -> list[Any]:
    return checked(doc.get(key), list, key, _wrong_type)


def _config_str(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"encryption configuration: {what} must be a non-empty string")
    return value

"""Values encrypted at rest the way kube-apiserver does decrypt back to the stored object."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path

import nacl.secret
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lifeboat.errors import DecryptionError, IntegrityError, UsageError
from lifeboat.kube.objects import (
    EncryptionConfiguration,
    EncryptionInfo,
    decode_value,
    decrypt_value,
    identify_encryption,
    load_encryption_configuration,
)
from tests.unit.kube.objects.fixtures import assert_meta_matches_json, load, require_fixtures

KEY = b"/registry/secrets/namespaceValue/nameValue"
OTHER_KEY = b"/registry/secrets/namespaceValue/someOtherName"


# Encryptors written from the apiserver's storage format (value/encrypt/aes, /secretbox).
def encrypt_aescbc(secret: bytes, plaintext: bytes, _etcd_key: bytes) -> bytes:
    pad = 16 - len(plaintext) % 16
    iv = os.urandom(16)
    encryptor = Cipher(algorithms.AES(secret), modes.CBC(iv)).encryptor()
    return iv + encryptor.update(plaintext + bytes([pad]) * pad) + encryptor.finalize()


def encrypt_aesgcm(secret: bytes, plaintext: bytes, etcd_key: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(secret).encrypt(nonce, plaintext, etcd_key)


def encrypt_secretbox(secret: bytes, plaintext: bytes, _etcd_key: bytes) -> bytes:
    nonce = os.urandom(24)
    return nonce + nacl.secret.SecretBox(secret).encrypt(plaintext, nonce).ciphertext


ENCRYPTORS: dict[str, Callable[[bytes, bytes, bytes], bytes]] = {
    "aescbc": encrypt_aescbc,
    "aesgcm": encrypt_aesgcm,
    "secretbox": encrypt_secretbox,
}


def stored(
    provider: str, key_name: str, secret: bytes, plaintext: bytes, etcd_key: bytes = KEY
) -> bytes:
    prefix = f"k8s:enc:{provider}:v1:{key_name}:".encode()
    return prefix + ENCRYPTORS[provider](secret, plaintext, etcd_key)


def config(
    *providers: dict[str, object], resources: tuple[str, ...] = ("secrets",)
) -> EncryptionConfiguration:
    return EncryptionConfiguration.from_document(
        {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "EncryptionConfiguration",
            "resources": [
                {"resources": list(resources), "providers": [*providers, {"identity": {}}]}
            ],
        }
    )


def keys(provider: str, *named: tuple[str, bytes]) -> dict[str, object]:
    return {
        provider: {"keys": [{"name": n, "secret": base64.b64encode(s).decode()} for n, s in named]}
    }


@pytest.fixture
def secret_fixture() -> bytes:
    require_fixtures()
    return load("core.v1.Secret").protobuf


@pytest.mark.parametrize("provider", ["aescbc", "aesgcm", "secretbox"])
def test_encrypted_secret_decrypts_back_to_the_stored_object(
    provider: str, secret_fixture: bytes
) -> None:
    secret = os.urandom(32)
    value = stored(provider, "key1", secret, secret_fixture)

    obj = decode_value(KEY, value, config(keys(provider, ("key1", secret))))

    assert obj.error is None
    assert obj.plaintext == secret_fixture
    assert obj.raw == value
    assert obj.encoding == "protobuf"
    assert obj.encryption == EncryptionInfo(provider, "v1", "key1")
    assert (obj.api_version, obj.kind) == ("v1", "Secret")
    assert obj.metadata is not None
    assert_meta_matches_json(obj.metadata, load("core.v1.Secret").document["metadata"])


@pytest.mark.parametrize("provider", ["aescbc", "aesgcm"])
def test_aes_keys_of_every_size_decrypt(provider: str, secret_fixture: bytes) -> None:
    for size in (16, 24, 32):
        secret = os.urandom(size)
        value = stored(provider, "k", secret, secret_fixture)
        info, plaintext = decrypt_value(value, KEY, config(keys(provider, ("k", secret))))
        assert plaintext == secret_fixture
        assert info.key_name == "k"


@pytest.mark.parametrize("provider", ["aescbc", "aesgcm", "secretbox"])
def test_wrong_key_is_a_decryption_error_for_that_object_only(
    provider: str, secret_fixture: bytes
) -> None:
    value = stored(provider, "key1", os.urandom(32), secret_fixture)
    wrong = config(keys(provider, ("key1", os.urandom(32))))

    obj = decode_value(KEY, value, wrong)

    assert isinstance(obj.error, DecryptionError)
    assert "did not decrypt" in str(obj.error)
    assert obj.encoding == "encrypted"
    assert obj.encryption == EncryptionInfo(provider, "v1", "key1")
    assert obj.metadata is None and obj.raw == value


def test_aesgcm_value_moved_to_another_key_does_not_decrypt(secret_fixture: bytes) -> None:
    # The apiserver authenticates the etcd key: a ciphertext copied elsewhere is rejected.
    secret = os.urandom(32)
    value = stored("aesgcm", "key1", secret, secret_fixture, etcd_key=KEY)

    obj = decode_value(OTHER_KEY, value, config(keys("aesgcm", ("key1", secret))))

    assert isinstance(obj.error, DecryptionError)


def test_rotated_keys_are_found_by_name(secret_fixture: bytes) -> None:
    old, new = os.urandom(32), os.urandom(32)
    cfg = config(keys("aescbc", ("new", new), ("old", old)))

    assert (
        decode_value(KEY, stored("aescbc", "old", old, secret_fixture), cfg).plaintext
        == secret_fixture
    )
    assert (
        decode_value(KEY, stored("aescbc", "new", new, secret_fixture), cfg).plaintext
        == secret_fixture
    )


def test_key_name_containing_a_colon_is_matched_against_the_configuration(
    secret_fixture: bytes,
) -> None:
    secret = os.urandom(32)
    value = stored("secretbox", "team:a", secret, secret_fixture)

    obj = decode_value(KEY, value, config(keys("secretbox", ("team:a", secret))))

    assert obj.error is None
    assert obj.encryption is not None and obj.encryption.key_name == "team:a"


def test_key_of_the_rule_for_this_resource_wins_over_a_same_named_key_elsewhere(
    secret_fixture: bytes,
) -> None:
    for_secrets, for_configmaps = os.urandom(32), os.urandom(32)
    cfg = EncryptionConfiguration.from_document(
        {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "EncryptionConfiguration",
            "resources": [
                {"resources": ["configmaps"], "providers": [keys("aescbc", ("k", for_configmaps))]},
                {"resources": ["*.*"], "providers": [keys("aescbc", ("k", for_secrets))]},
            ],
        }
    )
    value = stored("aescbc", "k", for_secrets, secret_fixture)

    assert decode_value(KEY, value, cfg).plaintext == secret_fixture
    assert cfg.rules[1].applies_to("", "secrets")
    assert not cfg.rules[0].applies_to("", "secrets")


def test_encrypted_json_value_decodes_as_json() -> None:
    require_fixtures()
    plaintext = load("core.v1.ConfigMap").json_bytes
    secret = os.urandom(32)
    value = stored("aesgcm", "k", secret, plaintext)

    obj = decode_value(KEY, value, config(keys("aesgcm", ("k", secret))))

    assert (obj.encoding, obj.kind, obj.error) == ("json", "ConfigMap", None)


def test_unknown_key_name_is_a_decryption_error(secret_fixture: bytes) -> None:
    value = stored("aescbc", "gone", os.urandom(32), secret_fixture)

    obj = decode_value(KEY, value, config(keys("aescbc", ("key1", os.urandom(32)))))

    assert isinstance(obj.error, DecryptionError)
    assert "no aescbc key named 'gone'" in str(obj.error)


def test_without_a_configuration_the_provider_and_key_are_still_reported(
    secret_fixture: bytes,
) -> None:
    value = stored("secretbox", "key7", os.urandom(32), secret_fixture)

    obj = decode_value(KEY, value)

    assert obj.encoding == "encrypted"
    assert obj.encryption == EncryptionInfo("secretbox", "v1", "key7")
    assert isinstance(obj.error, DecryptionError)
    assert obj.resource is not None and obj.resource.resource == "secrets"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_kms_values_are_reported_as_not_decryptable_offline(version: str) -> None:
    value = f"k8s:enc:kms:{version}:vault-plugin:".encode() + os.urandom(64)

    obj = decode_value(
        KEY, value, config({"kms": {"name": "vault-plugin", "endpoint": "unix:///kms.sock"}})
    )

    assert obj.encryption == EncryptionInfo("kms", version, "vault-plugin")
    assert isinstance(obj.error, DecryptionError)
    assert "not decryptable offline" in str(obj.error)


def test_encrypted_prefix_without_a_key_name_is_malformed() -> None:
    obj = decode_value(KEY, b"k8s:enc:aescbc")
    assert obj.encoding == "encrypted" and obj.error is not None
    assert identify_encryption(b"k8s\x00abc") is None


def test_cbc_payload_that_is_not_whole_blocks_is_damage_not_a_wrong_key(secret_fixture: bytes) -> None:
    # A wrong key is the user's to fix (DecryptionError, exit 3); a value cut short is damaged (exit 1).
    secret = os.urandom(32)
    value = stored("aescbc", "k", secret, secret_fixture)[:-3]

    obj = decode_value(KEY, value, config(keys("aescbc", ("k", secret))))

    assert isinstance(obj.error, IntegrityError) and not isinstance(obj.error, DecryptionError)
    assert "the value is corrupt" in str(obj.error)


def test_configuration_loads_from_the_apiserver_yaml_file(
    tmp_path: Path, secret_fixture: bytes
) -> None:
    secret = os.urandom(32)
    path = tmp_path / "encryption.yaml"
    path.write_text(
        "apiVersion: apiserver.config.k8s.io/v1\n"
        "kind: EncryptionConfiguration\n"
        "resources:\n"
        "  - resources: [secrets, configmaps]\n"
        "    providers:\n"
        "      - secretbox:\n"
        "          keys:\n"
        f"            - name: key1\n              secret: {base64.b64encode(secret).decode()}\n"
        "      - identity: {}\n"
    )

    cfg = load_encryption_configuration(path)

    assert cfg.rules[0].resources == ("secrets", "configmaps")
    assert [p.kind for p in cfg.rules[0].providers] == ["secretbox", "identity"]
    assert (
        decode_value(KEY, stored("secretbox", "key1", secret, secret_fixture), cfg).plaintext
        == secret_fixture
    )


def test_key_secrets_never_appear_in_repr() -> None:
    secret = b"\x01" * 32
    cfg = config(keys("aescbc", ("key1", secret)))
    assert base64.b64encode(secret).decode() not in repr(cfg)
    assert repr(secret) not in repr(cfg)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"apiVersion": "v1", "kind": "ConfigMap", "resources": []}, "EncryptionConfiguration"),
        (
            {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration"},
            "resources must be a list",
        ),
        (
            {
                "apiVersion": "apiserver.config.k8s.io/v1",
                "kind": "EncryptionConfiguration",
                "resources": [
                    {
                        "resources": ["secrets"],
                        "providers": [
                            {"aescbc": {"keys": [{"name": "k", "secret": "not base64!"}]}}
                        ],
                    }
                ],
            },
            "not valid base64",
        ),
        (
            {
                "apiVersion": "apiserver.config.k8s.io/v1",
                "kind": "EncryptionConfiguration",
                "resources": [
                    {"resources": ["secrets"], "providers": [keys("secretbox", ("k", b"short"))]}
                ],
            },
            "is 5 bytes, must be 32",
        ),
    ],
)
def test_invalid_configuration_is_a_usage_error(document: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        EncryptionConfiguration.from_document(document)


def test_unreadable_configuration_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        load_encryption_configuration(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("resources: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_encryption_configuration(tmp_path / "bad.yaml")

"""S3 credentials: from the AWS_* variables, or from files named in the config; never shown."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lifeboat.config.model import LifeboatConfig
from lifeboat.errors import UsageError
from lifeboat.regular_files import read_small

SECRET_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def store_environ(config: LifeboatConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """The AWS_* variables ``repository.open_store`` should see for this config.

    Region and endpoint come from the resolved config (which already gave the environment
    precedence over the file). Keys named by ``*-file`` settings are read here and used
    only when the environment does not set ``AWS_ACCESS_KEY_ID`` itself.
    """
    env = dict(environ)
    s3 = config.repository.s3
    if s3.region:
        env["AWS_REGION"] = s3.region
    if s3.endpoint_url:
        env["AWS_ENDPOINT_URL"] = s3.endpoint_url
    if s3.access_key_id_file and s3.secret_access_key_file and not environ.get("AWS_ACCESS_KEY_ID"):
        env["AWS_ACCESS_KEY_ID"] = read_secret(s3.access_key_id_file, "access-key-id-file")
        env["AWS_SECRET_ACCESS_KEY"] = read_secret(s3.secret_access_key_file, "secret-access-key-file")
        if s3.session_token_file:
            env["AWS_SESSION_TOKEN"] = read_secret(s3.session_token_file, "session-token-file")
    return env


def credentials_source(config: LifeboatConfig, environ: Mapping[str, str]) -> str:
    """Where S3 keys will come from, for ``config show``: names only, never values."""
    if environ.get("AWS_ACCESS_KEY_ID"):
        given = [name for name in SECRET_VARIABLES if environ.get(name)]
        return f"env {', '.join('$' + n for n in given)} (values hidden)"
    s3 = config.repository.s3
    if s3.access_key_id_file:
        return f"files {s3.access_key_id_file}, {s3.secret_access_key_file} (values hidden)"
    return "none set: the S3 client's default chain (web identity, instance profile)"


def read_secret(path: Path, key: str) -> str:
    """The key in the file ``repository.s3.<key>`` names (stripped; never shown in an error)."""
    data = read_small(path, f"repository.s3.{key}")
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UsageError(f"cannot read repository.s3.{key} {path}: not UTF-8 text") from None
    if not value:
        raise UsageError(f"repository.s3.{key}: {path} is empty; put the key in it")
    return value

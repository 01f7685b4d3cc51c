"""Object stores that hold lifeboat repositories: local directory, S3, and a test double.

:func:`open_store` turns a repository URL into an :class:`ObjectStore`:

* ``file:///var/backups/etcd`` or a plain path (``/var/backups/etcd``, ``./backups``)
* ``s3://BUCKET/PREFIX`` with credentials and endpoint from the standard AWS variables
* ``memory://NAME`` — an empty in-memory store, for tests only (gone when the process ends)

:class:`S3Store` (obstore) is imported when first asked for or when an ``s3://`` repository
is opened: a local repository, and the chain survey's child given one, start without it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from lifeboat.config.rules import repository_url_given
from lifeboat.errors import UsageError
from lifeboat.lazy import lazy_exports
from lifeboat.store.base import ObjectInfo, ObjectStore, check_key, check_prefix
from lifeboat.store.local import LocalStore
from lifeboat.store.memory import Fault, MemoryStore

if TYPE_CHECKING:
    from lifeboat.store.s3 import S3Store
else:
    __getattr__ = lazy_exports(__name__, {"S3Store": "lifeboat.store.s3"})

__all__ = [
    "Fault",
    "LocalStore",
    "MemoryStore",
    "ObjectInfo",
    "ObjectStore",
    "S3Store",
    "check_key",
    "check_prefix",
    "open_store",
]

SUPPORTED = "file://, s3://, or a directory path"
_NOT_YET = ("gs", "gcs", "az", "azure", "abfs", "abfss")


def open_store(url: str, environ: Mapping[str, str] = os.environ) -> ObjectStore:
    """Open the repository at ``url``; S3 settings come from ``environ`` (AWS_* variables).

    Opening does no I/O: an unreachable store or missing bucket shows on first use.
    """
    if not url:
        raise UsageError(f"no repository given; pass --repo or set LIFEBOAT_REPO ({SUPPORTED})")
    scheme, sep, _ = url.partition("://")
    if not sep:
        named, _, rest = url.partition(":")
        if repository_url_given(url):  # else a directory "file:..." in the working directory (a service's: /)
            if named.lower() == "file" and rest.startswith("/"):
                return _open_file(url, "", rest)  # file:/ABSOLUTE/PATH, RFC 8089's short form
            raise UsageError(f"repository URL {url!r} is not {named.lower()}://...; use {SUPPORTED}")
        return LocalStore(Path(url))
    scheme = scheme.lower()
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise UsageError(
            f"repository URL {scheme}://... must not contain credentials; "
            "use the AWS_* environment variables instead"
        )
    if parts.query or parts.fragment:
        # s3://bucket/prefix?region=... was read as s3://bucket/prefix: the setting silently ignored.
        raise UsageError(f"repository URL {scheme}://... must not have a '?' or '#' part (it would be ignored); "
                         "S3 settings come from the AWS_* environment variables")
    if scheme == "file":
        return _open_file(url, parts.netloc, parts.path)
    if scheme == "s3":
        from lifeboat.store.s3 import S3Store

        return S3Store.from_env(parts.netloc, parts.path.lstrip("/"), environ)
    if scheme == "memory":
        return MemoryStore(url)
    if scheme in _NOT_YET:
        raise UsageError(f"{scheme}:// repositories are not supported yet; use {SUPPORTED}")
    raise UsageError(f"unknown repository scheme {scheme!r}; use {SUPPORTED}")


def _open_file(url: str, host: str, path: str) -> LocalStore:
    if host not in ("", "localhost"):
        raise UsageError(
            f"file repository URL {url!r} names host {host!r}; use file:///ABSOLUTE/PATH"
        )
    if not path:
        raise UsageError(f"file repository URL {url!r} has no path; use file:///ABSOLUTE/PATH")
    return LocalStore(Path(unquote(path)))

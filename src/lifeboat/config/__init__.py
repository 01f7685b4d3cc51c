"""The config file ``lifeboat.yaml``, validated at load time, layered with env and flags.

Use::

    from lifeboat.config import load_config, resolve_config, next_run

    config = load_config(Path("lifeboat.yaml"))          # file over defaults
    resolved = resolve_config(path, os.environ, flags)    # flags > env > file > defaults
    resolved.config.retention.policies()                  # {"keep-last": 7, ...} for
                                                          #   lifeboat.retention.parse_policies
    resolved.origin("etcd.endpoints")                     # Origin("env", "$ETCDCTL_ENDPOINTS")
    store_environ(resolved.config, os.environ)            # AWS_* for repository.open_store
    next_run(resolved.config.schedules.backup, now_utc)   # next cron tick after now

Every problem (unknown key, wrong type, negative count, bad cron expression or duration,
duplicate key, unreadable file) is a :class:`~lifeboat.errors.UsageError` naming the file
(or variable, or flag) and the key path. The file never holds secrets: S3 keys come from
``AWS_*`` variables or ``repository.s3.*-file``, age identities only as file paths. See
docs/configuration.md for an annotated example.

Importing the package imports none of its modules: each name is imported when first asked for,
so that code needing only :mod:`lifeboat.config.secrets` or :mod:`lifeboat.config.rules`
(the chain survey's child process) does not pay for pydantic (:mod:`lifeboat.config.model`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lifeboat.lazy import lazy_exports

if TYPE_CHECKING:
    from lifeboat.config.credentials import credentials_source, store_environ
    from lifeboat.config.load import (
        ENV_KEYS,
        FlagValue,
        Origin,
        ResolvedConfig,
        load_config,
        resolve_config,
    )
    from lifeboat.config.model import (
        DEFAULT_LISTEN,
        AgentSection,
        BackupSection,
        EncryptionSection,
        EtcdSection,
        LifeboatConfig,
        RepositorySection,
        RetentionSection,
        S3Section,
        SchedulesSection,
    )
    from lifeboat.config.rules import CONFIG_ENV
    from lifeboat.config.show import ShownValue, shown_values
    from lifeboat.config.values import (
        CRON_NICKNAMES, MIN_ORPHAN_GRACE, check_orphan_grace, cron_fields, next_run, parse_listen, parse_seconds,
    )

_WHERE = {
    "AgentSection": "lifeboat.config.model",
    "BackupSection": "lifeboat.config.model",
    "CONFIG_ENV": "lifeboat.config.rules",
    "CRON_NICKNAMES": "lifeboat.config.values",
    "DEFAULT_LISTEN": "lifeboat.config.model",
    "ENV_KEYS": "lifeboat.config.load",
    "EncryptionSection": "lifeboat.config.model",
    "EtcdSection": "lifeboat.config.model",
    "FlagValue": "lifeboat.config.load",
    "LifeboatConfig": "lifeboat.config.model",
    "MIN_ORPHAN_GRACE": "lifeboat.config.values",
    "Origin": "lifeboat.config.load",
    "RepositorySection": "lifeboat.config.model",
    "ResolvedConfig": "lifeboat.config.load",
    "RetentionSection": "lifeboat.config.model",
    "S3Section": "lifeboat.config.model",
    "SchedulesSection": "lifeboat.config.model",
    "ShownValue": "lifeboat.config.show",
    "check_orphan_grace": "lifeboat.config.values",
    "credentials_source": "lifeboat.config.credentials",
    "cron_fields": "lifeboat.config.values",
    "load_config": "lifeboat.config.load",
    "next_run": "lifeboat.config.values",
    "parse_listen": "lifeboat.config.values",
    "parse_seconds": "lifeboat.config.values",
    "resolve_config": "lifeboat.config.load",
    "shown_values": "lifeboat.config.show",
    "store_environ": "lifeboat.config.credentials",
}

if not TYPE_CHECKING:  # mypy sees the imports above, and refuses a name they do not give
    __getattr__ = lazy_exports(__name__, _WHERE)


__all__ = [
    "CONFIG_ENV",
    "CRON_NICKNAMES",
    "MIN_ORPHAN_GRACE",
    "DEFAULT_LISTEN",
    "ENV_KEYS",
    "AgentSection",
    "BackupSection",
    "EncryptionSection",
    "EtcdSection",
    "FlagValue",
    "LifeboatConfig",
    "Origin",
    "RepositorySection",
    "ResolvedConfig",
    "RetentionSection",
    "S3Section",
    "SchedulesSection",
    "ShownValue",
    "check_orphan_grace",
    "credentials_source",
    "cron_fields",
    "load_config",
    "next_run",
    "parse_listen",
    "parse_seconds",
    "resolve_config",
    "shown_values",
    "store_environ",
]

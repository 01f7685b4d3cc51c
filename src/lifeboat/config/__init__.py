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
"""

from lifeboat.config.credentials import credentials_source, store_environ
from lifeboat.config.load import (
    CONFIG_ENV,
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
from lifeboat.config.show import ShownValue, shown_values
from lifeboat.config.values import (
    CRON_NICKNAMES, MIN_ORPHAN_GRACE, check_orphan_grace, cron_fields, next_run, parse_seconds,
)

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
    "parse_seconds",
    "resolve_config",
    "shown_values",
    "store_environ",
]

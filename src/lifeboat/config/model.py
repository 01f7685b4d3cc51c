"""The shape of ``lifeboat.yaml``: one frozen pydantic model per section, keys in kebab-case.

Every section rejects unknown keys. No field holds a secret: S3 keys come from the AWS_*
variables or from files named by ``*-file`` keys, age identities only by file path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, field_validator, model_validator,
)

from lifeboat.config.rules import (
    CLUSTER_NAME, DEFAULT_ZSTD_LEVEL, LABEL_MAX, RESERVED_LABEL_PREFIX, endpoint_problem,
    plain_text_problem, repository_url_given,
)
from lifeboat.config.secrets import identity_path, public_recipient, shown
from lifeboat.config.values import (
    ByteSize,
    CommaList,
    Count,
    CronExpression,
    EndpointUrl,
    NonBlank,
    OrphanGrace,
    PositiveCount,
    RetentionDuration,
    Seconds,
    Wait,
    absolute,
    parse_listen,
    recipients_file_absolute,
)

DEFAULT_LISTEN = "127.0.0.1:9847"


def kebab(name: str) -> str:
    return name.replace("_", "-")


class Section(BaseModel):
    """A mapping in the file: kebab-case keys, unknown keys refused, immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=kebab)


class EtcdSection(Section):
    """How to reach etcd; unset endpoints and certificates mean "discover on a kubeadm node"."""

    endpoints: CommaList | None = None
    cacert: Annotated[Path, absolute("/etc/kubernetes/pki/etcd/ca.crt")] | None = None
    cert: Annotated[Path, absolute("/etc/kubernetes/pki/etcd/healthcheck-client.crt")] | None = None
    key: Annotated[Path, absolute("/etc/kubernetes/pki/etcd/healthcheck-client.key")] | None = None
    dial_timeout: Seconds = 5.0
    command_timeout: Seconds = 10.0

    @field_validator("endpoints")
    @classmethod
    def _some_endpoint(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("must name at least one endpoint, e.g. https://127.0.0.1:2379")
        for url in value or ():
            if (problem := endpoint_problem(url)) is not None:
                raise ValueError(problem)
        return value


class S3Section(Section):
    """S3 settings the URL cannot carry. Keys only through files (or AWS_* variables)."""

    region: NonBlank | None = None
    endpoint_url: EndpointUrl | None = None
    # A relative value is not repeated in messages: it may be the key pasted where its file belongs.
    access_key_id_file: Annotated[Path, absolute("/etc/lifeboat/s3/access-key-id", show=False)] | None = None
    secret_access_key_file: Annotated[Path, absolute("/etc/lifeboat/s3/secret-access-key", show=False)] | None = None
    session_token_file: Annotated[Path, absolute("/etc/lifeboat/s3/session-token", show=False)] | None = None

    @model_validator(mode="after")
    def _both_key_files(self) -> S3Section:
        if (self.access_key_id_file is None) != (self.secret_access_key_file is None):
            raise ValueError("set both access-key-id-file and secret-access-key-file, or neither")
        return self


class RepositorySection(Section):
    url: NonBlank | None = None
    s3: S3Section = Field(default_factory=S3Section)

    @field_validator("url")
    @classmethod
    def _absolute_directory(cls, value: str | None) -> str | None:
        # A directory path (no scheme) is a path key like any other: absolute, see absolute().
        if value is not None and not repository_url_given(value) and not Path(value).is_absolute():
            raise ValueError("must be a URL such as s3://bucket/prefix or file:///var/backups/lifeboat, "
                             f"or an absolute directory path, got {shown(value)}")
        return value


class EncryptionSection(Section):
    """age recipients (public keys or files of them) and identity files (for verify, drills)."""

    recipients: list[Annotated[NonBlank, AfterValidator(public_recipient), AfterValidator(recipients_file_absolute)]] \
        = Field(default_factory=list)
    identity_files: list[Annotated[Path, absolute("/etc/lifeboat/age-key.txt"), BeforeValidator(identity_path)]] \
        = Field(default_factory=list)


class BackupSection(Section):
    zstd_level: int = DEFAULT_ZSTD_LEVEL
    tmp_dir: Annotated[Path, absolute("/var/tmp")] | None = None
    capture_files: StrictBool = True
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("zstd_level", mode="before")
    @classmethod
    def _zstd_level(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 19:
            raise ValueError(f"must be an integer from 1 to 19, got {shown(value)}")
        return value

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not key.strip():
                raise ValueError("label names must not be empty")
            if (problem := plain_text_problem(key, LABEL_MAX)) is not None:
                raise ValueError(f"a label's name {problem}")
            if key.startswith(RESERVED_LABEL_PREFIX):
                # The agent's tick and a synthetic backup's chain and time: given by hand, they
                # would skip a scheduled backup or date a backup by a moment it does not hold.
                raise ValueError(f"label {key!r}: names starting with {RESERVED_LABEL_PREFIX!r} are lifeboat's own")
            if (problem := plain_text_problem(text, LABEL_MAX)) is not None:
                raise ValueError(f"the value of label {key!r} {problem}")
        return value


class CaptureSection(Section):
    """Continuous capture: a watch on the whole keyspace written as segments (``lifeboat capture``).

    ``enabled`` makes the elected agent capture; ``lifeboat capture`` runs whatever it says.
    """

    enabled: StrictBool = False
    flush_interval: Seconds = 1.0
    segment_max_bytes: ByteSize = 16 << 20
    heartbeat_interval: Seconds = 30.0
    # "passes": a watch from the next unread revision every half flush interval, read up to where
    # etcd was and cancelled (a pass in a few messages from etcd's store); "live": one watch that
    # never ends, each revision sent as it commits (seen times within milliseconds).
    watch: Literal["passes", "live"] = "passes"
    spool_dir: Annotated[Path, absolute("/var/lib/lifeboat/capture-spool")] | None = None
    spool_max_bytes: ByteSize = 256 << 20
    retry_interval: Seconds = 2.0
    pack: StrictBool = True  # the agent packs small closed segments after each backup (lifeboat pack)
    pack_min_age: Wait = 300.0  # lifeboat pack's --min-age
    pack_delete_after: Wait = 1800.0  # lifeboat pack's --delete-after

    @model_validator(mode="after")
    def _sizes(self) -> CaptureSection:
        if self.segment_max_bytes < 4096:
            raise ValueError(f"segment-max-bytes must be at least 4KiB, got {self.segment_max_bytes}")
        if self.spool_max_bytes < self.segment_max_bytes:
            raise ValueError("spool-max-bytes must be at least segment-max-bytes "
                             f"({self.spool_max_bytes} < {self.segment_max_bytes})")
        if self.flush_interval > 60:
            raise ValueError(f"flush-interval must be at most 60s, got {self.flush_interval:g}s")
        if self.flush_interval < 0.01:  # a watch pass each half interval: one every 50 ns was accepted
            raise ValueError(f"flush-interval must be at least 10ms, got {self.flush_interval:g}s")
        return self


class SchedulesSection(Section):
    """Cron expressions (five fields, read in UTC) for the agent."""

    backup: CronExpression | None = None
    drill: CronExpression | None = None


class RetentionSection(Section):
    """The policies ``lifeboat.retention.parse_policies`` accepts, plus the floor and orphan grace."""

    keep_last: PositiveCount | None = None
    keep_within: RetentionDuration | None = None
    keep_hourly: PositiveCount | None = None
    keep_daily: PositiveCount | None = None
    keep_weekly: PositiveCount | None = None
    keep_monthly: PositiveCount | None = None
    keep_yearly: PositiveCount | None = None
    recovery_window: RetentionDuration | None = None
    min_redundancy: Count = 1
    orphan_grace: OrphanGrace = 24 * 3600.0

    @model_validator(mode="after")
    def _some_policy(self) -> RetentionSection:
        if not self.policies():
            raise ValueError("names no policy; set at least one, e.g. keep-last: 7")
        return self

    def policies(self) -> dict[str, object]:
        """The policies set, as ``{"keep-last": 7, "recovery-window": "7d"}``."""
        settings = ("min_redundancy", "orphan_grace")
        return {
            kebab(name): getattr(self, name)
            for name in type(self).model_fields
            if name not in settings and getattr(self, name) is not None
        }


class AgentSection(Section):
    listen: str = DEFAULT_LISTEN
    lease_ttl: Seconds = 15.0
    log_format: Literal["json", "text"] = "text"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("lease_ttl")
    @classmethod
    def _ttl(cls, value: float) -> float:
        # etcd grants whole seconds and raises very short TTLs to its minimum (about
        # 1.5 election timeouts, 1.5 s by default): below 2 s the TTL is not what it says.
        if value < 2:
            raise ValueError(f"must be at least 2s, got {value:g}s")
        return value


class LifeboatConfig(Section):
    """Everything the CLI flags set, plus schedules, retention and agent settings."""

    cluster: str = "default"
    root: Annotated[Path, absolute("/host")] = Path("/")
    etcd: EtcdSection = Field(default_factory=EtcdSection)
    repository: RepositorySection = Field(default_factory=RepositorySection)
    encryption: EncryptionSection = Field(default_factory=EncryptionSection)
    backup: BackupSection = Field(default_factory=BackupSection)
    schedules: SchedulesSection = Field(default_factory=SchedulesSection)
    capture: CaptureSection = Field(default_factory=CaptureSection)
    retention: RetentionSection | None = None
    agent: AgentSection = Field(default_factory=AgentSection)

    @field_validator("cluster")
    @classmethod
    def _cluster_name(cls, value: str) -> str:
        if not CLUSTER_NAME.fullmatch(value):
            raise ValueError(
                f"must be 1-63 lowercase letters, digits, '.', '_' or '-', got {shown(value)}"
            )
        return value

    def drills_cannot_decrypt(self) -> str | None:
        """Why scheduled drills would fail on every run, or None: backups encrypted to
        ``encryption.recipients`` and no ``encryption.identity-files`` to read them back."""
        if self.schedules.drill is not None and self.encryption.recipients and not self.encryption.identity_files:
            return ("schedules.drill needs encryption.identity-files: the backups are encrypted to "
                    "encryption.recipients and a drill must decrypt them")
        return None

"""The one error tree of lifeboat.

Every failure that leaves a lifeboat module is a :class:`LifeboatError`. Lower-level
errors (grpc, obstore, OSError, zstd, age) are translated where the seam to that system
lives (``etcd/``, ``store/``, ``backup/``), never further up. The CLI is the only
place that exits; it maps the branches of this tree to exit codes:

    LifeboatError
    ├── UsageError            exit 3  bad flags, config, URL, identity file, missing tool
    ├── OperationFailed       exit 1  the operation ran and failed (integrity, not found, ...)
    │   ├── NotFound                  a backup, object or key that does not exist
    │   ├── AlreadyExists             a create-only write found the object already there
    │   ├── IntegrityError            a checksum, hash or signature did not match
    │   ├── SnapshotFormatError       a file that is not a readable etcd/bbolt snapshot
    │   ├── DecryptionError   exit 3  no identity given opens it: a configuration error
    │   ├── NoHealthyMember           no voting member is healthy enough to back up from
    │   ├── Unsupported               the backend cannot do this (an S3 server without a call)
    │   └── NoRoom            exit 5  too little free disk for what the operation must write;
    │                                 refused before it starts
    └── BackendUnavailable    exit 2  etcd or the object store cannot be reached / refused us
        ├── EtcdUnavailable
        ├── EtcdAuthError             TLS handshake or authentication rejected
        └── RepositoryUnavailable
            └── NoRepository          no repository marker at the URL: mistyped, or not mounted

Anything else reaching the CLI is a bug: exit 4 with a request to report it. Outside the
tree, :class:`Terminated` (SIGTERM) unwinds like KeyboardInterrupt: exit 143.

Messages are one line that names what failed and what to do. They never contain
secrets (keys, credentials, identity file contents).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNAVAILABLE = 2
EXIT_USAGE = 3
EXIT_UNEXPECTED = 4
EXIT_NO_ROOM = 5


class Terminated(BaseException):
    """SIGTERM arrived (systemd, Kubernetes, kill): raised in the main thread to unwind.

    Like KeyboardInterrupt it is not an ``Exception``, so no ``except Exception`` swallows it;
    every ``finally`` and ``except BaseException`` cleanup runs on the way out.
    """


class LifeboatError(Exception):
    """Base of every error lifeboat raises on purpose."""

    exit_code: int = EXIT_FAILED


class UsageError(LifeboatError):
    """Bad input from the user: flags, configuration, URLs, files named on the command line."""

    exit_code = EXIT_USAGE


class OperationFailed(LifeboatError):
    """The operation ran against working backends and failed."""

    exit_code = EXIT_FAILED


class NotFound(OperationFailed):
    """A backup, object, member or key that does not exist."""


class AlreadyExists(OperationFailed):
    """A create-only write found the target already present."""


class IntegrityError(OperationFailed):
    """A checksum, hash or recorded size did not match the data."""


class SnapshotFormatError(OperationFailed):
    """A file that is not a readable etcd snapshot (not bbolt, truncated, corrupted)."""


class DecryptionError(OperationFailed):
    """Encrypted data could not be decrypted with the identities given (or keys configured):
    the user's to fix, like a missing identity; damaged data is an IntegrityError."""

    exit_code = EXIT_USAGE


class NoHealthyMember(OperationFailed):
    """No healthy, voting member is available to take a snapshot from."""


class Unsupported(OperationFailed):
    """The backend cannot do what was asked (an S3-compatible server lacking an optional call)."""


class NoRoom(OperationFailed):
    """A filesystem lacks the room the operation needs (said before it starts, refused then)."""

    exit_code = EXIT_NO_ROOM


class BackendUnavailable(LifeboatError):
    """etcd or the object store could not be reached, or refused the request."""

    exit_code = EXIT_UNAVAILABLE


class EtcdUnavailable(BackendUnavailable):
    """No etcd endpoint answered in time."""


class EtcdAuthError(BackendUnavailable):
    """etcd rejected our TLS certificate or credentials (or we rejected its certificate)."""


class RepositoryUnavailable(BackendUnavailable):
    """The object store could not be reached, or rejected our credentials."""


class NoRepository(RepositoryUnavailable):
    """No lifeboat repository at the URL (no marker): a mistyped URL, or a mount that is not there."""

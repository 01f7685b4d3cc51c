"""Objects in an S3 bucket (``s3://BUCKET/PREFIX``), through obstore.

Credentials, region and endpoint come from the standard AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` defaulting to ``us-east-1``,
``AWS_ENDPOINT_URL``); without explicit keys obstore's usual chain applies (web identity,
container and instance credentials). With an endpoint, requests use path-style addressing,
and ``http://`` is allowed for it.

Guarantees, as S3 gives them:

* ``put_stream`` of more than :data:`PART_SIZE` bytes is a multipart upload of
  :data:`PART_SIZE` parts with at most :data:`PARTS_IN_FLIGHT` in flight, so memory stays
  near their product whatever the object size; a smaller stream is buffered and sent as
  one PUT. The object appears only when the upload completes; an exception from the chunk
  iterable or a failed part aborts the upload, so no object and no pending upload remain
  (if the abort request itself fails, the parts linger invisibly until a bucket lifecycle
  rule removes them).
* Every request is given up when it goes slower than :class:`~lifeboat.store.pace.Pace`
  allows for its size (see there), and requests are of bounded size: parts of
  :data:`PART_SIZE`, ``get_stream`` ranges of :data:`STREAM_RANGE` (the first of
  :data:`SMALL_REQUEST`), listing pages of 1000 keys.
* ``incomplete_uploads`` lists the multipart uploads in progress under the prefix (those a
  killed backup left), and ``remove_incomplete`` aborts one; obstore cannot, so
  :mod:`lifeboat.store.s3_uploads` signs these requests itself. That needs the explicit keys
  (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``); without them, or on a server without
  ListMultipartUploads, listing raises :class:`~lifeboat.errors.Unsupported`.
* ``put_bytes(create_only=True)`` is one PUT with ``If-None-Match: *``: the store itself
  refuses to overwrite, atomically, even against a concurrent writer. AWS S3 (since 2024-08)
  and SeaweedFS (checked against 4.48 in the contract suite) honour it; some S3-compatible
  stores ignore the header and silently overwrite. So before its first create-only write a
  store writes a probe object twice, create-only (then removes it): when the second write is
  not refused, it refuses every create-only write (:class:`~lifeboat.errors.UsageError`),
  since a manifest or capture segment could then be replaced by another writer's unnoticed.
  Reads, plain writes and deletes go on working (a restore from such a store still works).
"""

from __future__ import annotations

import builtins
import datetime as dt
import itertools
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit, urlunsplit

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store as _Client

from lifeboat.config.rules import check_endpoint_url
from lifeboat.errors import (
    OperationFailed,
    RepositoryUnavailable,
    Unsupported,
    UsageError,
)
from lifeboat.store.base import (
    PROBE_FOLDER, IncompleteUpload, ObjectInfo, StoreBase, after_in_folder, check_folder, check_key, check_listing,
    check_prefix,
)
from lifeboat.store.pace import DEFAULT_PACE, Pace
from lifeboat.store.sigv4 import AwsCredentials

if TYPE_CHECKING:
    from obstore import GetOptions, ListResult, ObjectMeta
    from obstore.store import S3Config

    from lifeboat.store.s3_uploads import MultipartUploads

PART_SIZE = 5 << 20  # S3's smallest part: memory stays low, 50 GB objects still fit in 10,000 parts
# One part uploading while the next fills: a backup's compressed stream is about a quarter of
# etcd's snapshot rate (~25 MB/s), far below what one S3 connection carries, and every part in
# flight costs PART_SIZE of memory (bench: 2 in flight, 156 MB peak; 1 in flight, 144 MB).
PARTS_IN_FLIGHT = 1
DEFAULT_REGION = "us-east-1"
# obstore's default: path-style requests to the region's endpoint.
AWS_ENDPOINT = "https://s3.{region}.amazonaws.com"

log = logging.getLogger("lifeboat.store")

# Requests up to this size (HEAD, DELETE, a listing page of 1000 keys, a manifest) share one
# client, and so one time limit (see :class:`~lifeboat.store.pace.Pace`).
SMALL_REQUEST = 1 << 20
# A folder listing (one obstore call, however many pages) may take this many pages' time.
FOLDER_PAGES = 10
# get_range's callers read this many ranges at once (a restore's RANGES_IN_FLIGHT): each is
# given the time of as many, since they share one link.
RANGES_SHARING = 4
DELETES_PER_REQUEST = 1000  # S3's most for one DeleteObjects request
# get_stream reads an object as ranges of this size, each a request of bounded time.
STREAM_RANGE = 8 << 20

_S3_CODE = re.compile(r"<Code>([A-Za-z]+)</Code>")


class S3Store(StoreBase):
    """One bucket (and optional key prefix) on S3 or an S3-compatible server."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str = DEFAULT_REGION,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        pace: Pace = DEFAULT_PACE,
    ) -> None:
        if not bucket:
            raise UsageError("S3 repository URL has no bucket; use s3://BUCKET/PREFIX")
        if endpoint:
            try:
                endpoint = check_endpoint_url(endpoint)
            except ValueError as exc:
                raise UsageError(f"S3 endpoint (AWS_ENDPOINT_URL) {exc}") from None
        self._bucket = bucket
        self._prefix = check_prefix(prefix.strip("/") + "/") if prefix.strip("/") else ""
        self._endpoint = _without_credentials(endpoint) if endpoint else None
        super().__init__(f"s3://{bucket}/{self._prefix}".rstrip("/"))
        self._bucket_seen = False
        self._create_only: bool | None = None  # whether If-None-Match: * is honoured; probed once
        self._probe_lock = threading.Lock()
        config: S3Config = {"region": region}
        if endpoint:
            config["endpoint"] = endpoint.rstrip("/")
            config["virtual_hosted_style_request"] = False
        if access_key_id and secret_access_key:
            config["access_key_id"] = access_key_id
            config["secret_access_key"] = secret_access_key
            if session_token:
                config["session_token"] = session_token
        # What the requests obstore lacks are signed with (bucket URL, keys, region).
        self._uploads_access = None if not (access_key_id and secret_access_key) else (
            f"{(endpoint or AWS_ENDPOINT.format(region=region)).rstrip('/')}/{bucket}",
            AwsCredentials(access_key_id, secret_access_key, session_token), region,
        )
        self._config = config
        self._allow_http = bool(endpoint and endpoint.startswith("http://"))
        self._pace = pace
        self._clients: dict[int, _Client] = {}
        self._clients_lock = threading.Lock()

    def __getstate__(self) -> dict[str, object]:
        """What pickle sends (the chain survey's child gets the store): no locks, no clients."""
        state = dict(self.__dict__)
        state["_clients"] = {}
        del state["_clients_lock"], state["_probe_lock"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._clients_lock = threading.Lock()
        self._probe_lock = threading.Lock()

    def _client(self, size: int = 0) -> _Client:
        """A client whose requests may move up to ``size`` bytes at the store's :class:`Pace`.

        obstore's timeout is a client's, not a request's: one client per size class (powers of
        two from :data:`SMALL_REQUEST`), so a HEAD or a listing page is given up in about half a
        minute, a 5 MiB part in a few minutes, and neither waits hours for a dripping answer.
        """
        tier = _tier(size)
        with self._clients_lock:
            client = self._clients.get(tier)
            if client is None:
                client = self._clients[tier] = _Client(
                    self._bucket,
                    config=self._config,
                    client_options={
                        "allow_http": self._allow_http,
                        "connect_timeout": "5s",
                        "timeout": dt.timedelta(seconds=self._pace.limit(tier)),
                        "read_timeout": dt.timedelta(seconds=self._pace.idle),
                    },
                    # Fail an unreachable store in about a second instead of obstore's three
                    # minutes; the backup schedule, not this call, is the place for long retries.
                    # A body that breaks off is read on from where it stopped, as a retry.
                    retry_config={
                        "max_retries": 3,
                        "retry_timeout": dt.timedelta(seconds=30),
                        "backoff": {"init_backoff": dt.timedelta(milliseconds=100), "base": 2},
                    },
                )
            return client

    @classmethod
    def from_env(
        cls, bucket: str, prefix: str = "", environ: Mapping[str, str] = os.environ
    ) -> S3Store:
        """Open ``bucket`` with credentials and endpoint from the standard AWS variables."""
        return cls(
            bucket,
            prefix,
            endpoint=environ.get("AWS_ENDPOINT_URL") or None,
            region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
            access_key_id=environ.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=environ.get("AWS_SESSION_TOKEN") or None,
        )

    def _where(self) -> str:
        at = f" at {self._endpoint}" if self._endpoint else ""
        return f"S3 bucket {self._bucket}{at}"

    def _uploads(self) -> MultipartUploads | None:
        """The multipart requests obstore lacks, or None without explicit keys.

        Imported here, not at the top: their HTTP client and XML parser (urllib.request, ssl,
        email, xml: 4 MB of an S3 store's 28 MB) serve only the pruning of killed uploads, never
        a backup, a restore or a survey's child process.
        """
        if self._uploads_access is None:
            return None
        from lifeboat.store.s3_uploads import MultipartUploads

        bucket_url, credentials, region = self._uploads_access
        return MultipartUploads(bucket_url, credentials, region, self._where())

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        path = self._prefix + check_key(key)
        counted = _Counted(chunks)
        head = counted.take(PART_SIZE)
        if counted.exhausted:
            # Smaller than one part: one plain PUT instead of three multipart requests.
            try:
                obstore.put(self._client(counted.size), path, b"".join(head), use_multipart=False)
            except (BaseError, OSError) as exc:
                self._raise(exc, "writing", key, counted.size)
            return ObjectInfo(key, counted.size)
        try:
            obstore.put(
                self._client(PART_SIZE), path, itertools.chain(_handed_on(head), counted), use_multipart=True,
                chunk_size=PART_SIZE, max_concurrency=PARTS_IN_FLIGHT,
            )
        except (BaseError, OSError) as exc:
            if counted.failure is not None:
                raise counted.failure from None
            self._raise(exc, "writing", key, PART_SIZE)
        return ObjectInfo(key, counted.size)

    def put_bytes(self, key: str, data: bytes, *, create_only: bool = False) -> ObjectInfo:
        path = self._prefix + check_key(key)
        if create_only:
            self.require_create_only()
        try:
            obstore.put(
                self._client(len(data)), path, data, use_multipart=False,
                mode="create" if create_only else "overwrite",
            )
        except (AlreadyExistsError, PreconditionError):
            raise self._already_exists(key) from None
        except (BaseError, OSError) as exc:
            self._raise(exc, "writing", key, len(data))
        return ObjectInfo(key, len(data))

    def get_stream(self, key: str, chunk_size: int = 4 << 20) -> Iterator[bytes]:
        """The object as ranges, each one request of bounded time: the first :data:`SMALL_REQUEST`
        (the whole of a manifest, a marker, most segments: a small request's time limit), then
        :data:`STREAM_RANGE` each.

        One GET of a whole object could not be given a time limit that both stops a dripping
        store and lets a large object through a slow link. Every range after the first must
        come from the same version of the object (``If-Match`` its ETag).
        """
        path = self._prefix + check_key(key)
        first = self._range_of(path, key, 0, "", SMALL_REQUEST)  # a missing key raises here, before iteration
        return self._stream(path, key, first, chunk_size)

    def _stream(self, path: str, key: str, first: _Range, chunk_size: int) -> Iterator[bytes]:
        piece = first
        while True:
            for start in range(0, len(piece.data), chunk_size):
                yield bytes(piece.data[start:start + chunk_size])
            following = piece.start + len(piece.data)
            if following >= piece.size:
                return
            piece = self._range_of(path, key, following, first.etag, STREAM_RANGE)

    def _range_of(self, path: str, key: str, start: int, etag: str, length: int) -> _Range:
        """Bytes ``start`` to ``start`` + ``length`` of the object (with ``etag``, of that version)."""
        found = self._fetch(path, key, start, start + length, etag)
        if found is None:  # S3 refuses any range of an empty object
            if start == 0:
                return self._empty(key)
            raise RepositoryUnavailable(f"{self._where()} refused bytes from offset {start} of {key} as out of "
                                        "range, though its first answer said the object was longer; check the endpoint")
        return found

    def _fetch(self, path: str, key: str, start: int, end: int, etag: str = "", *,
               budget: int = 0) -> _Range | None:
        """Bytes ``start`` to ``end`` of the object, checked to be what was asked; None when all lie past its end.

        With ``etag``, of that version only. A store or proxy whose Content-Length or
        Content-Range disagrees with the bytes it sent is refused, never taken for the object's
        end: a short range would be a gap in what a restore decompresses, blamed on the backup.
        The request is given the time of ``budget`` bytes (at least the range's) at the Pace.
        """
        options: GetOptions = {"range": (start, end)}
        if etag:
            options["if_match"] = etag
        try:
            result = obstore.get(self._client(max(budget, end - start)), path, options=options)
            # A view, not a copy: each copy of a 4 MiB range is a fresh mapping to fault in.
            data = memoryview(result.bytes())
            size, begun = int(result.meta["size"]), result.range[0]
        except PreconditionError:
            raise OperationFailed(f"object {key} in {self._url} was replaced while it was being read; "
                                  "read it again") from None
        except (BaseError, OSError) as exc:
            if _past_the_end(exc):
                return None
            self._raise(exc, "reading", key, max(budget, end - start))
        expected = max(min(end, size) - start, 0)
        if begun != start or len(data) != expected:
            raise RepositoryUnavailable(
                f"{self._where()} sent {len(data)} bytes from offset {begun} of {key} when asked for "
                f"{expected} from offset {start}; check the endpoint and any proxy before it"
            )
        return _Range(start, size, data, etag or str(result.meta.get("e_tag") or ""))

    def _empty(self, key: str) -> _Range:
        """An empty object, which S3 answers a range request on with 416 (or a missing one)."""
        info = self.stat(key)
        if info is None:
            raise self._not_found(key)
        if info.size != 0:
            raise RepositoryUnavailable(f"{self._where()} refused the first bytes of {key} ({info.size} bytes) "
                                        "as out of range; check the endpoint")
        return _Range(0, 0, memoryview(b""), info.etag or "")

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.get_stream(key))

    def get_range(self, key: str, start: int, end: int) -> bytes | memoryview:
        path = self._prefix + check_key(key)
        if end <= start:
            if self.stat(key) is None:
                raise self._not_found(key)
            return b""
        # Ranges are read several at once (a restore reads 4), sharing the link: each is given
        # the time of RANGES_SHARING of them, so that a link at the Pace's rate carries them all.
        found = self._fetch(path, key, start, end, budget=(end - start) * RANGES_SHARING)
        return b"" if found is None else found.data

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._prefix + check_key(key)
        try:
            meta = obstore.head(self._client(), path)
        except FileNotFoundError:
            self._require_bucket()
            return None
        except (BaseError, OSError) as exc:
            self._raise(exc, "inspecting", key)
        return ObjectInfo(key, int(meta["size"]), _aware(meta["last_modified"]), meta.get("e_tag"))

    def list(self, prefix: str = "", *, after: str = "") -> Iterator[ObjectInfo]:
        full = self._prefix + check_listing(prefix, after)
        # obstore matches prefixes by whole path segments; S3 prefixes are plain strings, so
        # list the enclosing "directory" and filter by the string prefix here.
        directory = full.rpartition("/")[0]
        # S3 starts after a whole key, SeaweedFS after an entry name of the folder: either
        # returns every object the folder has after ``after``, and perhaps more, filtered here.
        offset = full + after if after else None
        found: list[ObjectInfo] = []
        seen: set[str] = set()
        try:
            for batch in obstore.list(self._client(), prefix=directory or None, offset=offset, chunk_size=1000):
                for meta in batch:
                    path = meta["path"]
                    if path in seen:  # else a store that repeats its pages is listed for ever, in memory
                        raise RepositoryUnavailable(
                            f"{self._where()} listed {path[len(self._prefix):]} twice while listing {prefix or '/'}: "
                            "its listing repeats itself (a store or proxy that ignores S3's continuation token?); "
                            "check the endpoint")
                    seen.add(path)
                    if path.startswith(full) and after_in_folder(path, full, after):
                        found.append(ObjectInfo(path[len(self._prefix):], int(meta["size"]),
                                                _aware(meta["last_modified"]), meta.get("e_tag")))
        except (BaseError, OSError) as exc:
            self._raise(exc, "listing", prefix or "/")
        self._bucket_seen = True
        found.sort(key=lambda o: o.key)
        return iter(found)

    def folders(self, prefix: str = "") -> tuple[str, ...]:
        full = self._prefix + check_folder(prefix)
        limit = FOLDER_PAGES * self._pace.limit(SMALL_REQUEST)
        try:
            # Imported here: asyncio brings ssl, which the chain survey's child must not load.
            import asyncio

            listing = asyncio.run(self._folders_within(full.rstrip("/") or None, limit))
        except TimeoutError:
            raise RepositoryUnavailable(
                f"{self._where()} did not finish listing the folders under {prefix or '/'} in {limit:.0f} s "
                f"({FOLDER_PAGES} pages' time): a store whose listing repeats itself, or one too slow; "
                "check the endpoint"
            ) from None
        except (BaseError, OSError) as exc:
            self._raise(exc, "listing", prefix or "/")
        self._bucket_seen = True
        return tuple(sorted(path[len(full):].strip("/") for path in listing["common_prefixes"]
                            if path.startswith(full)))

    async def _folders_within(self, prefix: str | None, limit: float) -> ListResult[Sequence[ObjectMeta]]:
        """obstore's delimiter listing follows every page inside one call: with a time limit,
        since a store that repeats its pages would keep it (and its memory) growing for ever.
        Cancelling the call on time out drops obstore's request."""
        import asyncio

        return await asyncio.wait_for(obstore.list_with_delimiter_async(self._client(), prefix=prefix), limit)

    def delete_many(self, keys: Sequence[str]) -> None:
        """S3's DeleteObjects, up to 1,000 keys a request (a chain of a week's segments is a few
        hundred requests instead of 600,000). A batch the store refuses (a key it will not
        delete, a request that failed) is deleted again one key a request, whose errors name the
        key and the reason."""
        checked = [check_key(key) for key in keys]
        for start in range(0, len(checked), DELETES_PER_REQUEST):
            batch = checked[start:start + DELETES_PER_REQUEST]
            if len(batch) > 1:
                try:
                    obstore.delete(self._client(), [self._prefix + key for key in batch])
                    continue
                except (BaseError, OSError) as exc:
                    log.debug("%s refused deleting %d keys in one request (%s); deleting them one by one",
                               self._url, len(batch), type(exc).__name__)
            for key in batch:
                self.delete(key)

    def delete(self, key: str) -> None:
        path = self._prefix + check_key(key)
        try:
            obstore.delete(self._client(), path)
        except FileNotFoundError:
            self._require_bucket()
        except (BaseError, OSError) as exc:
            self._raise(exc, "deleting", key)

    def incomplete_uploads(self, prefix: str = "") -> builtins.list[IncompleteUpload]:
        """Multipart uploads in progress under ``prefix``, by the time of their newest part.

        lifeboat aborts its own upload when a backup fails or gets SIGTERM; a killed process
        (SIGKILL, power loss) leaves one. Uploads whose key is not a valid lifeboat key are not
        ours and are left out.
        """
        uploads = self._uploads()
        if uploads is None:
            raise Unsupported(
                f"{self._url}: listing multipart uploads needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(lifeboat signs that request itself and does not read instance or web-identity credentials)"
            )
        found: builtins.list[IncompleteUpload] = []
        for pending in uploads.pending(self._prefix + check_folder(prefix)):
            name = pending.key[len(self._prefix):]
            try:
                check_key(name)
            except UsageError:
                continue
            parts = uploads.parts(pending)
            if parts is None:
                continue  # completed or aborted since it was listed
            written = max(pending.initiated, parts.last_modified or pending.initiated)
            found.append(IncompleteUpload(name, parts.size, written, upload_id=pending.upload_id))
        found.sort(key=lambda u: (u.modified, u.name))
        return found

    def remove_incomplete(self, upload: IncompleteUpload) -> None:
        uploads = self._uploads()
        if uploads is None or not upload.upload_id:
            raise UsageError(f"{upload.name} is not a multipart upload lifeboat can abort in {self._url}")
        uploads.abort(self._prefix + check_key(upload.name), upload.upload_id)

    def require_create_only(self) -> None:
        """Refuse (UsageError) when the store overwrites despite ``If-None-Match: *`` (probed once)."""
        with self._probe_lock:
            if self._create_only is None:
                self._create_only = self._probe_create_only()
        if not self._create_only:
            raise UsageError(
                f"{self._where()} ignores If-None-Match: * (a create-only write replaced an existing object); "
                "lifeboat writes manifests and capture segments create-only so that no writer can replace "
                "another's, and refuses to write to a store that would let it: use one that honours it "
                "(AWS S3 and SeaweedFS do)"
            )

    def _probe_create_only(self) -> bool:
        """Whether a second create-only write of one new object is refused, as it must be.

        Credentials allowed to write only lifeboat's own objects (a policy naming ``clusters/*``)
        may not write the probe: then the store is trusted, with a warning, as before the probe.
        """
        key = f"{PROBE_FOLDER}create-only-{secrets.token_hex(8)}"
        path = self._prefix + key
        try:
            obstore.put(self._client(), path, b"first", use_multipart=False, mode="create")
        except (BaseError, OSError) as exc:
            if isinstance(exc, PermissionDeniedError) or _s3_code(exc) == "AccessDenied":
                log.warning("could not check that %s refuses to overwrite with If-None-Match: * (writing %s%s was "
                            "denied); trusting it. Allow s3:PutObject and s3:DeleteObject on %s%s* to have it checked",
                            self._where(), self._prefix, key, self._prefix, PROBE_FOLDER)
                return True
            self._raise(exc, "writing", key)
        try:
            obstore.put(self._client(), path, b"second", use_multipart=False, mode="create")
        except (AlreadyExistsError, PreconditionError):
            return True
        except (BaseError, OSError) as exc:
            self._raise(exc, "writing", key)
        finally:
            self.delete(key)
        return False

    def _require_bucket(self) -> None:
        """Raise RepositoryUnavailable if the bucket is missing (checked once per store).

        S3 answers a HEAD on a missing bucket with a bare 404, the same as for a missing
        key, so a "not found" is only trusted once the bucket is known to exist.
        """
        if self._bucket_seen:
            return
        try:
            for _ in obstore.list(self._client(), prefix=self._prefix + PROBE_FOLDER):  # one small request
                break
        except FileNotFoundError:
            raise RepositoryUnavailable(
                f"{self._where()} does not exist; create it or fix the repository URL"
            ) from None
        except (BaseError, OSError) as exc:
            self._raise(exc, "checking", "the bucket")
        self._bucket_seen = True

    def _raise(self, exc: BaseException, action: str, key: str, size: int = 0) -> NoReturn:
        """Translate an obstore failure of a request moving up to ``size`` bytes into the lifeboat error tree."""
        code = _s3_code(exc)
        if code == "RequestTimeTooSkewed":
            raise RepositoryUnavailable(
                f"{self._where()} refused the time of our request (RequestTimeTooSkewed) while {action} {key}: "
                "this machine's clock is off the store's by more than S3 allows (15 minutes); synchronise it (NTP)"
            ) from None
        if code == "NoSuchBucket":
            raise RepositoryUnavailable(
                f"{self._where()} does not exist; create it or fix the repository URL"
            ) from None
        if isinstance(exc, FileNotFoundError):
            self._require_bucket()
            raise self._not_found(key) from None
        if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)) or code in (
            "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "ExpiredToken",
        ):
            raise RepositoryUnavailable(
                f"{self._where()} refused our credentials ({code or 'access denied'}) while "
                f"{action} {key}; check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
            ) from None
        unlisted = _INVALID_PATH.search(str(exc))
        if unlisted:
            # obstore refuses a whole listing for one key it cannot parse ("a//b", "a/./b"): put
            # there by another tool, never by lifeboat. Retrying cannot help; removing it does.
            raise OperationFailed(
                f"{self._where()} holds an object lifeboat's S3 client cannot list, {unlisted.group(1)[:200]!r} "
                f"(an empty, '.' or '..' segment in its name), so {action} {key} failed; "
                "lifeboat never writes such names: remove or rename that object"
            ) from None
        if isinstance(exc, BaseError) and self._uploads_access is None and _CREDENTIAL_SERVICES.search(str(exc)):
            # No keys given: obstore asked the instance (or container) metadata service for some.
            raise RepositoryUnavailable(
                f"{self._where()}: no S3 credentials were given and none came from the instance metadata "
                f"service ({_reason(exc, code)}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the "
                "config file's repository.s3.access-key-id-file and secret-access-key-file)"
            ) from None
        if isinstance(exc, BaseError):
            raise RepositoryUnavailable(
                f"{self._where()} failed while {action} {key}: "
                f"{_reason(exc, code, self._pace.describe(_tier(size)))}; check the endpoint and network"
            ) from None
        raise OperationFailed(f"{self._where()}: {action} {key} failed: {_reason(exc, code)}") from None


def _tier(size: int) -> int:
    """The size class of a request moving ``size`` bytes: a power of two, at least SMALL_REQUEST."""
    return max(SMALL_REQUEST, 1 << max(size - 1, 0).bit_length())


@dataclass(frozen=True)
class _Range:
    """One range of an object as read: where it starts, the object's size and version, its bytes."""

    start: int
    size: int
    data: memoryview
    etag: str


def _past_the_end(exc: BaseException) -> bool:
    """Whether the store refused a range as lying wholly past the object's end (HTTP 416)."""
    text = str(exc).lower()
    return "range" in text and "not satisf" in text


def _handed_on(chunks: list[bytes]) -> Iterator[bytes]:
    """Yield ``chunks`` in order, dropping each from the list as it goes.

    The first part's chunks are read ahead to choose between one PUT and a multipart upload;
    iterating the list itself would keep all of them (a whole part) alive until the upload ends.
    """
    chunks.reverse()
    while chunks:
        yield chunks.pop()


class _Counted:
    """Pass chunks through, counting their bytes and keeping what the source raised."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self.size = 0
        self.failure: BaseException | None = None
        self.exhausted = False

    def take(self, limit: int) -> list[bytes]:
        """Read chunks until more than ``limit`` bytes or the end of the source."""
        taken: list[bytes] = []
        while self.size <= limit:
            try:
                taken.append(next(self))
            except StopIteration:
                break
        return taken

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> bytes:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self.exhausted = True
            raise
        except BaseException as exc:
            self.failure = exc
            raise
        self.size += len(chunk)
        return chunk


def _s3_code(exc: BaseException) -> str | None:
    match = _S3_CODE.search(str(exc))
    return match.group(1) if match else None


# Where AWS clients look for credentials none were given: EC2's instance metadata service and
# ECS's container credentials endpoint.
_CREDENTIAL_SERVICES = re.compile(r"//(?:169\.254\.169\.254|169\.254\.170\.2|\[fd00:ec2::254\])[/:]")


def _reason(exc: BaseException, code: str | None, limits: str = "") -> str:
    """A short, single-line cause: the S3 error code, or the transport error's gist.

    ``limits`` says how long the request was allowed to take, for a timeout.
    """
    if code:
        return code
    text = str(exc)
    if _TIMED_OUT.search(text):
        return f"the store did not answer in time, or sent its answer too slowly ({limits or 'timeout'})"
    if "IncompleteBody" in text:
        return "the store closed the connection before its answer was complete (fewer bytes than it announced)"
    if "NotPartial" in text or "non-partial response" in text:
        return ("the store answered a request for a range with the whole object "
                "(it ignores Range, which lifeboat reads by)")
    status = _STATUS.search(text)
    if status:  # an answer without an S3 error document: a proxy's, or a failing server's
        return f"the store answered HTTP {status.group(1)}{status.group(2) or ''}"
    for gist in ("error sending request", "connection refused", "timed out", "dns error"):
        if gist in text.lower():
            # obstore's message ends with the Debug form of the error chain; its innermost
            # cause (the OS error, or the HTTP error's kind) tells a refused connection from a
            # timeout or a connection closed mid-request.
            cause = _OS_MESSAGE.findall(text) or _HTTP_KIND.findall(text)
            return f"{gist} ({cause[-1].lower()})" if cause and cause[-1].lower() != gist else gist
    first = text.splitlines()[0] if text else type(exc).__name__
    return _URL.sub("<url>", first)[:160]


_URL = re.compile(r"https?://\S+")
_INVALID_PATH = re.compile(r'Encountered object with invalid path: (?:Error parsing )?Path "([^"\n]*)"')
_STATUS = re.compile(r"non-2xx status code: (\d{3})( [A-Za-z][A-Za-z ]{0,40}[A-Za-z])?")
# reqwest's timeouts (the whole request's, or one read's), as obstore's message shows them.
_TIMED_OUT = re.compile(r"kind: Timeout\b|\bTimedOut\b|operation timed out")
_OS_MESSAGE = re.compile(r'message: "([^"\n]{1,80})"')
_HTTP_KIND = re.compile(r"HttpError \{\s*kind: (\w+)")


def _without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` removed, for messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _aware(moment: dt.datetime) -> dt.datetime:
    """S3's Last-Modified is UTC; obstore may hand it over without a zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)

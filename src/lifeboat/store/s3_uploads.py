"""S3 multipart uploads that were never completed: list them, read their parts, abort them.

obstore (0.12) has no ListMultipartUploads, ListParts or AbortMultipartUpload, so these three
requests are made here, signed with :mod:`lifeboat.store.sigv4`, over the endpoint, region,
addressing and credentials the S3 store gives obstore. A killed backup (SIGKILL, power loss)
leaves its upload pending: its parts cost storage but no listing shows them.

Facts from the S3 API reference this relies on:

* ``GET /BUCKET?uploads&prefix=P`` lists uploads in progress, at most 1000 a page, sorted by
  key then upload id; a truncated page (``IsTruncated``) names ``NextKeyMarker`` and
  ``NextUploadIdMarker``, sent back as ``key-marker`` / ``upload-id-marker``. Each upload has
  ``Key``, ``UploadId`` and ``Initiated`` (ISO 8601, UTC).
* ``GET /BUCKET/KEY?uploadId=U`` lists its parts (``PartNumber``, ``LastModified``, ``Size``),
  paged by ``NextPartNumberMarker`` / ``part-number-marker``.
* ``DELETE /BUCKET/KEY?uploadId=U`` aborts it (204); an upload already completed or aborted
  answers ``NoSuchUpload``.
* Errors are ``<Error><Code>...</Code></Error>`` documents; a server without a call answers
  ``NotImplemented`` (501) or ``MethodNotAllowed`` (405).

Nothing here is trusted to filter by prefix: every listed key is checked against the prefix
asked for, so a server that ignored ``prefix`` still cannot make us touch another's upload.
"""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from http.client import HTTPConnection, HTTPException, HTTPResponse, HTTPSConnection, IncompleteRead
from typing import Any, NoReturn

from lifeboat.clock import Clock, SystemClock
from lifeboat.errors import OperationFailed, RepositoryUnavailable, Unsupported
from lifeboat.store.pace import DEFAULT_PACE, Pace
from lifeboat.store.sigv4 import AwsCredentials, encode_path, encode_query, sign

# (method, url, headers) -> (HTTP status, body). The real one is :func:`send_http`.
Transport = Callable[[str, str, Mapping[str, str]], tuple[int, bytes]]

MAX_BODY = 8 << 20  # a page of 1000 uploads is about 400 KB of XML
_CLOCK = SystemClock()
_CREDENTIAL_CODES = ("SignatureDoesNotMatch", "InvalidAccessKeyId", "ExpiredToken", "InvalidToken")
_UNSUPPORTED_CODES = ("NotImplemented", "MethodNotAllowed")


@dataclass(frozen=True)
class PendingUpload:
    """A multipart upload the store holds as in progress."""

    key: str  # the whole key in the bucket
    upload_id: str
    initiated: datetime


@dataclass(frozen=True)
class UploadParts:
    size: int  # bytes in all its parts
    last_modified: datetime | None  # the newest part's time; None before the first part


class MultipartUploads:
    """The multipart requests of one bucket. ``where`` names it in messages (no credentials)."""

    def __init__(
        self, bucket_url: str, credentials: AwsCredentials, region: str, where: str, *,
        transport: Transport | None = None, now: Callable[[], datetime] = SystemClock().now,
    ) -> None:
        self._bucket_url = bucket_url.rstrip("/")
        self._credentials = credentials
        self._region = region
        self._where = where
        self._send = transport or send_http
        self._now = now

    def pending(self, prefix: str) -> list[PendingUpload]:
        """Every upload in progress whose key starts with ``prefix``, by key and upload id."""
        found: list[PendingUpload] = []
        markers: dict[str, str] = {}
        while True:
            action = "listing multipart uploads"
            body = self._call("GET", "/", {"uploads": "", "prefix": prefix, **markers}, action)
            page = _document(body, "ListMultipartUploadsResult", self._where, action)
            for upload in _children(page, "Upload"):
                key, upload_id = _text(upload, "Key"), _text(upload, "UploadId")
                if key.startswith(prefix) and upload_id:
                    found.append(PendingUpload(key, upload_id, _time(_text(upload, "Initiated"), self._where)))
            if _text(page, "IsTruncated").lower() != "true":
                return found
            after = {"key-marker": _text(page, "NextKeyMarker"), "upload-id-marker": _text(page, "NextUploadIdMarker")}
            if not after["key-marker"] or after == markers:
                raise OperationFailed(f"{self._where} sent a truncated list of multipart uploads without a "
                                      "new marker to continue from; cannot list them")
            markers = after

    def parts(self, upload: PendingUpload) -> UploadParts | None:
        """The size and newest part time of ``upload``; None when it is no longer in progress."""
        size, newest, marker = 0, None, ""
        while True:
            query = {"uploadId": upload.upload_id, **({"part-number-marker": marker} if marker else {})}
            action = f"listing the parts of {upload.key}"
            body = self._call("GET", "/" + upload.key, query, action, gone_ok=True)
            if body is None:
                return None
            page = _document(body, "ListPartsResult", self._where, action)
            for part in _children(page, "Part"):
                size += _count(_text(part, "Size"), self._where)
                modified = _time(_text(part, "LastModified"), self._where)
                newest = modified if newest is None else max(newest, modified)
            if _text(page, "IsTruncated").lower() != "true":
                return UploadParts(size, newest)
            following = _text(page, "NextPartNumberMarker")
            if not following or following == marker:
                raise OperationFailed(f"{self._where} sent a truncated list of the parts of {upload.key} "
                                      "without a new marker to continue from")
            marker = following

    def abort(self, key: str, upload_id: str) -> None:
        """Abort the upload; one already completed or aborted is not an error."""
        self._call("DELETE", "/" + key, {"uploadId": upload_id}, f"aborting the multipart upload of {key}",
                   gone_ok=True)

    def _call(self, method: str, path: str, query: Mapping[str, str], action: str, *,
              gone_ok: bool = False) -> bytes | None:
        """The body of a successful answer; None when ``gone_ok`` and the upload no longer exists."""
        url = f"{self._bucket_url}{encode_path(path)}?{encode_query(query)}"
        headers = sign(method, url, self._credentials, self._region, self._now())
        try:
            status, body = self._send(method, url, headers)
        except (OSError, HTTPException) as exc:
            raise RepositoryUnavailable(f"{self._where} could not be reached while {action}: "
                                        f"{_gist(exc)}; check the endpoint and network") from None
        if status >= 300:
            code = _error_code(body)
            if gone_ok and code == "NoSuchUpload":
                return None
            self._refused(status, code, action)
        return body

    def _refused(self, status: int, code: str, action: str) -> NoReturn:
        shown = code or f"HTTP {status}"
        if code in _UNSUPPORTED_CODES or status in (405, 501):
            raise Unsupported(f"{self._where} does not support {action} ({shown})")
        if code == "AccessDenied":
            raise Unsupported(f"{self._where} denied {action} (AccessDenied): the credentials lack the "
                              "permission for it (s3:ListBucketMultipartUploads, s3:ListMultipartUploadParts, "
                              "s3:AbortMultipartUpload)")
        if code == "NoSuchBucket":
            raise RepositoryUnavailable(f"{self._where} does not exist; create it or fix the repository URL")
        if code == "RequestTimeTooSkewed":
            raise RepositoryUnavailable(f"{self._where} refused the time of our request (RequestTimeTooSkewed) "
                                        f"while {action}: this machine's clock is off the store's by more than "
                                        "S3 allows (15 minutes); synchronise it (NTP)")
        if code in _CREDENTIAL_CODES or status in (401, 403):
            raise RepositoryUnavailable(f"{self._where} refused our credentials ({shown}) while {action}; "
                                        "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
        raise RepositoryUnavailable(f"{self._where} failed while {action}: {shown}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A signed request is valid for one host and path: a redirect is an answer, not a hop."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class _Connections:
    """The sockets one request opens (to the store, or to its proxy), for the watcher to shut.

    Kept as each connects: urllib detaches the socket from its connection once the headers
    are read, and the body is read from it after that.
    """

    def __init__(self) -> None:
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def http(self, host: str, **options: Any) -> HTTPConnection:
        return self._kept(HTTPConnection(host, **options))

    def https(self, host: str, **options: Any) -> HTTPConnection:
        return self._kept(HTTPSConnection(host, **options))

    def _kept(self, connection: HTTPConnection) -> HTTPConnection:
        connect = connection.connect

        def connect_kept() -> None:
            connect()
            with self._lock:
                self._sockets.append(connection.sock)

        connection.connect = connect_kept  # type: ignore[method-assign]
        return connection

    def shut(self) -> None:
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # closed already


class _WatchedHTTP(urllib.request.HTTPHandler):
    def __init__(self, connections: _Connections) -> None:
        super().__init__()
        self._connections = connections

    def http_open(self, req: urllib.request.Request) -> HTTPResponse:
        return self.do_open(self._connections.http, req)


class _WatchedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, connections: _Connections) -> None:
        super().__init__()
        self._connections = connections

    def https_open(self, req: urllib.request.Request) -> HTTPResponse:
        return self.do_open(self._connections.https, req, context=self._context)  # type: ignore[attr-defined]


def send_http(method: str, url: str, headers: Mapping[str, str], *, pace: Pace = DEFAULT_PACE,
              clock: Clock = _CLOCK) -> tuple[int, bytes]:
    """Send one request without a body; the status and at most :data:`MAX_BODY` bytes of the answer.

    Within ``pace``: the answer must come at ``pace.min_rate`` after ``pace.allowance`` seconds
    (a watcher shuts the connection down when it falls behind) and never pause ``pace.idle``
    seconds (the socket's timeout). urllib's proxy settings (``HTTPS_PROXY``, ``NO_PROXY``)
    apply; a redirect is returned, not followed.
    """
    connections = _Connections()
    opener = urllib.request.build_opener(_NoRedirect(), _WatchedHTTP(connections), _WatchedHTTPS(connections))
    received = [0]
    done = threading.Event()
    late = threading.Event()
    started = clock.monotonic()

    def watch() -> None:
        while not clock.wait(min(1.0, pace.allowance), done):
            if clock.monotonic() - started > pace.limit(received[0]):
                late.set()
                connections.shut()
                return

    watcher = threading.Thread(target=watch, name="s3-request-pace", daemon=True)
    watcher.start()
    refused: urllib.error.HTTPError | None = None  # held: dropping it closes the response
    try:
        try:
            response: HTTPResponse = opener.open(urllib.request.Request(url, method=method, headers=dict(headers)),
                                                 timeout=pace.idle)
            status = response.status
        except urllib.error.HTTPError as answer:
            refused = answer
            response, status = answer.fp, answer.code  # type: ignore[assignment]  # the HTTPResponse itself
        with response:
            body = bytearray()
            while len(body) <= MAX_BODY:
                piece = response.read1(1 << 16)
                if not piece:
                    break
                body += piece
                received[0] = len(body)
            if late.is_set() or (len(body) <= MAX_BODY and response.length):
                # The watcher shut the connection, or it closed before the announced Content-Length.
                raise IncompleteRead(bytes(body[:0]), response.length)
        return status, bytes(body)
    except (OSError, HTTPException) as exc:
        if late.is_set():
            raise TimeoutError(f"the store sent its answer too slowly ({pace.describe(received[0])})") from exc
        if isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError):
            raise TimeoutError(f"the store sent nothing for {pace.idle:g} s") from exc
        raise
    finally:
        done.set()
        watcher.join()
        if refused is not None:
            refused.close()


def _document(body: bytes | None, expect: str, where: str, action: str) -> ElementTree.Element:
    body = body or b""
    # A DOCTYPE is never part of S3's answers; refusing it rules out entity expansion.
    if len(body) > MAX_BODY or b"<!DOCTYPE" in body[:4096].upper():
        raise OperationFailed(f"{where} answered {action} with a document lifeboat does not read")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise OperationFailed(f"{where} answered {action} with something that is not S3's XML") from None
    if _local(root.tag) != expect:
        # e.g. a server that ignores ?uploads and answers a plain object listing
        raise Unsupported(f"{where} does not support {action}: it answered <{_local(root.tag)[:40]}> "
                          f"instead of <{expect}>")
    return root


def _error_code(body: bytes) -> str:
    try:
        root = ElementTree.fromstring(body[:65536]) if b"<!DOCTYPE" not in body[:4096].upper() else None
    except ElementTree.ParseError:
        return ""
    if root is None or _local(root.tag) != "Error":
        return ""
    code = _text(root, "Code")
    return code if code.isalnum() and len(code) <= 64 else ""


def _local(tag: str) -> str:
    """An element's name without its XML namespace (S3's is http://s3.amazonaws.com/doc/2006-03-01/)."""
    return tag.rpartition("}")[2]


def _children(element: ElementTree.Element, name: str) -> Iterator[ElementTree.Element]:
    return (child for child in element if _local(child.tag) == name)


def _text(element: ElementTree.Element, name: str) -> str:
    for child in _children(element, name):
        return (child.text or "").strip()
    return ""


def _time(text: str, where: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise OperationFailed(f"{where} gave an unreadable time {text[:40]!r} for a multipart upload") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _count(text: str, where: str) -> int:
    if not text.isdigit():
        raise OperationFailed(f"{where} gave an unreadable part size {text[:40]!r}")
    return int(text)


def _gist(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return (str(reason).splitlines() or [type(exc).__name__])[0][:160] or type(exc).__name__

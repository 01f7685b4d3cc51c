"""A small S3 server in a thread, for the ways a real store misbehaves that SeaweedFS will not.

Objects live in memory; signatures are not checked. Path-style requests only
(``/BUCKET/KEY``): PUT, GET (with ``Range``), HEAD, DELETE, and ListObjectsV2 (``list-type=2``
with ``prefix``, ``delimiter``, ``start-after``, ``continuation-token``, pages of
``max-keys`` keys, 1000 by default). What it does wrong is set on the instance:

* ``drip``: seconds to wait before each ``piece`` bytes of every answer's body (a trickle);
* ``link_rate``: bytes per second that all answers' bodies share (a slow link, not a slow store);
* ``stall_after``: bytes of a body after which it stops sending, holding the connection;
* ``cut_after``: bytes of a body after which it closes the connection (a truncated body);
* ``short_length``: announce a Content-Length this many bytes shorter than the body;
* ``read_drip``: seconds to wait before reading each ``piece`` bytes of a request's body;
* ``refuse``: (status, S3 error code) to answer every request with;
* ``deny_under``: answer writes of keys under this prefix 403 AccessDenied (a narrow policy);
* ``ignore_range``: answer a ranged GET with the whole object (200);
* ``repeat_pages``: answer every listing with its first page, "truncated", forever;
* ``most_deleted``: the most keys one DeleteObjects may name; more are answered 400 MalformedXML
  (as S3 answers more than 1,000);
* ``honour_if_none_match``: False to overwrite on ``PUT`` with ``If-None-Match: *``, as some
  S3-compatible stores do.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from email.utils import format_datetime
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape, unescape as unquote_xml

from lifeboat.store.pace import Pace
from lifeboat.store.s3 import S3Store


class FakeS3:
    def __init__(self, bucket: str = "bucket") -> None:
        self.bucket = bucket
        self.objects: dict[str, tuple[bytes, str, datetime]] = {}
        self.drip = 0.0
        self.link_rate: int | None = None
        self._link_free = 0.0  # when the shared link has sent what it was given (monotonic)
        self.piece = 1 << 16
        self.stall_after: int | None = None
        self.cut_after: int | None = None
        self.short_length = 0
        self.read_drip = 0.0
        self.honour_if_none_match = True
        self.refuse: tuple[int, str] | None = None
        self.repeat_pages = False
        self.ignore_range = False
        self.deny_under: str | None = None
        self.most_deleted: int | None = None
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def store(self, pace: Pace, prefix: str = "") -> S3Store:
        return S3Store(self.bucket, prefix, endpoint=self.endpoint, access_key_id="AKFAKE",
                       secret_access_key="fake-secret", pace=pace)

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self.objects[key] = (data, f'"{hashlib.md5(data).hexdigest()}"', datetime.now(timezone.utc))

    def _through_link(self, size: int) -> None:
        """Wait for ``size`` bytes' turn on the shared link."""
        if self.link_rate is None:
            return
        with self._lock:
            now = time.monotonic()
            self._link_free = max(now, self._link_free) + size / self.link_rate
            done = self._link_free
        time.sleep(max(0.0, done - now))

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def _list(self, query: dict[str, list[str]]) -> bytes:
        prefix = query.get("prefix", [""])[0]
        delimiter = query.get("delimiter", [""])[0]
        token = "" if self.repeat_pages else query.get("continuation-token", [""])[0]
        after = max(query.get("start-after", [""])[0], token)
        page = int(query.get("max-keys", ["1000"])[0])
        with self._lock:
            keys = sorted(k for k in self.objects if k.startswith(prefix) and k > after)
            entries: list[str] = []
            folders: list[str] = []
            last = ""
            for key in keys:
                if len(entries) + len(folders) >= page:
                    break
                rest = key[len(prefix):]
                if delimiter and delimiter in rest:
                    folder = prefix + rest.split(delimiter, 1)[0] + delimiter
                    if folder not in folders:
                        folders.append(folder)
                    last = key
                    continue
                data, etag, modified = self.objects[key]
                entries.append(f"<Contents><Key>{escape(key)}</Key><LastModified>"
                               f"{modified.strftime('%Y-%m-%dT%H:%M:%S.000Z')}</LastModified>"
                               f"<ETag>{escape(etag)}</ETag><Size>{len(data)}</Size></Contents>")
                last = key
            truncated = bool(keys) and last != keys[-1] or self.repeat_pages
        more = f"<NextContinuationToken>{escape(last)}</NextContinuationToken>" if truncated else ""
        common = "".join(f"<CommonPrefixes><Prefix>{escape(f)}</Prefix></CommonPrefixes>" for f in folders)
        return (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/'
                f'2006-03-01/"><Name>{self.bucket}</Name><Prefix>{escape(prefix)}</Prefix>'
                f"<KeyCount>{len(entries) + len(folders)}</KeyCount><MaxKeys>{page}</MaxKeys>"
                f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>{more}"
                f"{''.join(entries)}{common}</ListBucketResult>").encode()


def _handler(fake: FakeS3) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _target(self) -> tuple[str, dict[str, list[str]]]:
            parts = urlsplit(self.path)
            _, _, key = unquote(parts.path).lstrip("/").partition("/")
            fake.requests.append((self.command, self.path))
            return key, parse_qs(parts.query, keep_blank_values=True)

        def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                    *, send_body: bool = True) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(max(len(body) - fake.short_length, 0)))
            self.end_headers()
            if send_body:
                self._send(body)

        def _send(self, body: bytes) -> None:
            sent = 0
            try:
                while sent < len(body):
                    if fake.stall_after is not None and sent >= fake.stall_after:
                        fake._closing.wait(60)
                        return
                    if fake.cut_after is not None and sent >= fake.cut_after:
                        self.close_connection = True
                        return
                    if fake.drip:
                        time.sleep(fake.drip)
                    fake._through_link(min(fake.piece, len(body) - sent))
                    limit = min(x for x in (len(body), sent + fake.piece, fake.stall_after or len(body),
                                            fake.cut_after or len(body)) if x > sent)
                    self.wfile.write(body[sent:limit])
                    self.wfile.flush()
                    sent = limit
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _error(self, status: int, code: str) -> None:
            if not code:  # a bare status, as a proxy or a failing server sends
                self._answer(status, b"")
                return
            self._answer(status, f"<Error><Code>{code}</Code><Message>{code}</Message></Error>".encode(),
                         {"Content-Type": "application/xml"})

        def _refused(self) -> bool:
            if fake.refuse is None:
                return False
            length = int(self.headers.get("Content-Length", "0"))
            if length:
                self.rfile.read(length)
            self._error(*fake.refuse)
            return True

        def do_PUT(self) -> None:
            key, _ = self._target()
            if self._refused():
                return
            if fake.deny_under is not None and key.startswith(fake.deny_under):
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self._error(403, "AccessDenied")
                return
            length = int(self.headers.get("Content-Length", "0"))
            data = bytearray()
            while len(data) < length:
                if fake.read_drip:
                    time.sleep(fake.read_drip)
                piece = self.rfile.read(min(fake.piece, length - len(data)))
                if not piece:
                    return
                data += piece
            if self.headers.get("If-None-Match") == "*" and fake.honour_if_none_match and key in fake.objects:
                self._error(412, "PreconditionFailed")
                return
            fake.put(key, bytes(data))
            self._answer(200, b"", {"ETag": fake.objects[key][1]})

        def _object(self, send_body: bool) -> None:
            key, query = self._target()
            if self._refused():
                return
            if not key:
                if send_body and query.get("list-type") == ["2"]:
                    self._answer(200, fake._list(query), {"Content-Type": "application/xml"})
                else:
                    self._error(400, "InvalidRequest")
                return
            found = fake.objects.get(key)
            if found is None:
                self._error(404, "NoSuchKey")
                return
            data, etag, modified = found
            match = self.headers.get("If-Match")
            if match and match != etag:
                self._error(412, "PreconditionFailed")
                return
            headers = {"ETag": etag, "Last-Modified": format_datetime(modified, usegmt=True)}
            wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if wanted is None or fake.ignore_range:
                self._answer(200, data, headers, send_body=send_body)
                return
            start = int(wanted.group(1))
            end = min(int(wanted.group(2)) if wanted.group(2) else len(data) - 1, len(data) - 1)
            if start >= len(data):
                self._error(416, "InvalidRange")
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self._answer(206, data[start:end + 1], headers, send_body=send_body)

        def do_GET(self) -> None:
            self._object(True)

        def do_HEAD(self) -> None:
            self._object(False)

        def do_POST(self) -> None:  # DeleteObjects (``?delete``), which obstore's delete uses
            _, query = self._target()
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self._refused():
                return
            if "delete" not in query:
                self._error(501, "NotImplemented")
                return
            keys = [unquote_xml(k) for k in re.findall(r"<Key>(.*?)</Key>", body.decode())]
            if fake.most_deleted is not None and len(keys) > fake.most_deleted:
                self._error(400, "MalformedXML")
                return
            with fake._lock:
                for key in keys:
                    fake.objects.pop(key, None)
            deleted = "".join(f"<Deleted><Key>{escape(k)}</Key></Deleted>" for k in keys)
            self._answer(200, f"<DeleteResult>{deleted}</DeleteResult>".encode(), {"Content-Type": "application/xml"})

        def do_DELETE(self) -> None:
            key, _ = self._target()
            if self._refused():
                return
            with fake._lock:
                fake.objects.pop(key, None)
            self._answer(204)

    return Handler


@contextmanager
def fake_s3() -> Iterator[FakeS3]:
    fake = FakeS3()
    try:
        yield fake
    finally:
        fake.close()

"""A real SeaweedFS S3 endpoint for tests: ``weed mini`` on free loopback ports, always stopped.

``weed mini`` runs master, volume server, filer and S3 gateway in one process. Every port it
would otherwise take by default (each HTTP port, the gRPC ports, Iceberg, Lance) is set to a
free loopback port or disabled, so parallel sessions never collide and nothing binds 0.0.0.0.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import obstore
from obstore.store import S3Store

from lifeboat.store.s3_uploads import send_http
from lifeboat.store.sigv4 import AwsCredentials, encode_path, sign

from .binaries import dying_with_the_tests
from .ports import PORT_ATTEMPTS, PortTaken, free_port, lost_port_race


@dataclass(frozen=True)
class S3Endpoint:
    """What a client needs to reach the test S3 server."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    filer: str
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """The standard AWS variables pointing at this endpoint."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def pending_multipart_uploads(self, bucket: str | None = None) -> list[str]:
        """Names of unfinished multipart uploads in ``bucket``, read from the filer.

        SeaweedFS keeps the parts of an upload that was neither completed nor aborted in the
        bucket's ``.uploads`` directory, where an S3 listing never shows them.
        """
        url = f"{self.filer}/buckets/{bucket or self.bucket}/.uploads/"
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                listing = json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise
        return [Path(e["FullPath"]).name for e in listing.get("Entries") or []]

    def start_multipart_upload(self, key: str, first_part: bytes = b"") -> str:
        """Begin a multipart upload of ``key`` (the whole key in the bucket), as a writer that then
        dies would; with ``first_part``, upload it as part 1. Returns the upload id."""
        credentials = AwsCredentials(self.access_key, self.secret_key)
        url = f"{self.endpoint}/{self.bucket}{encode_path('/' + key)}"
        status, body = send_http("POST", url + "?uploads=", sign("POST", url + "?uploads=", credentials,
                                                                  self.region, datetime.now(timezone.utc)))
        assert status == 200, body
        upload_id = ElementTree.fromstring(body).findtext("{*}UploadId")
        assert upload_id, body
        if first_part:
            part_url = f"{url}?partNumber=1&uploadId={urllib.parse.quote(upload_id, safe='')}"
            headers = sign("PUT", part_url, credentials, self.region, datetime.now(timezone.utc),
                           payload_sha256=hashlib.sha256(first_part).hexdigest())
            request = urllib.request.Request(part_url, data=first_part, method="PUT", headers=headers)
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200
        return upload_id


@dataclass
class SeaweedServer:
    """One ``weed mini`` process; a context manager that always stops it."""

    weed: Path
    workdir: Path
    bucket: str = "lifeboat-test"
    access_key: str = field(default_factory=lambda: "AK" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    s3_port: int = field(default_factory=free_port)
    filer_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        # weed runs in its work dir: every path it is given must not depend on ours.
        self.workdir = Path(self.workdir).resolve()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "weed.log"

    def s3(self) -> S3Endpoint:
        return S3Endpoint(
            self.endpoint, self.access_key, self.secret_key, self.bucket,
            filer=f"http://127.0.0.1:{self.filer_port}",
        )

    def _write_identities(self) -> Path:
        identities = {
            "identities": [
                {
                    "name": "lifeboat-test",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        path = self.workdir / "identities.json"
        path.write_text(json.dumps(identities))
        path.chmod(0o600)
        return path

    def args(self) -> list[str]:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        return [
            str(self.weed), "mini",
            f"-dir={data}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={free_port()}", f"-master.port.grpc={free_port()}",
            f"-volume.port={free_port()}", f"-volume.port.grpc={free_port()}",
            f"-filer.port={self.filer_port}", f"-filer.port.grpc={free_port()}",
            f"-s3.port={self.s3_port}", f"-s3.port.grpc={free_port()}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={self._write_identities()}",
            f"-bucket={self.bucket}",
            # AWS answers NoSuchBucket; without this SeaweedFS would quietly create the bucket
            # on the first upload and tests of a missing bucket could never fail.
            "-s3.autoCreateBucket=false",
            "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
        ]

    def start(self, timeout: float = 60) -> SeaweedServer:
        """Start ``weed mini``; if another process took one of its ports, again on new ports."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        data = self.workdir / "data"
        # What earlier runs stored in this work dir (a benchmark's cached repository): kept.
        stored = {entry.name for entry in data.iterdir()} if data.is_dir() else set()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    dying_with_the_tests(self.args()), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, cwd=self.workdir,
                )
            try:
                self.wait_ready(timeout, log_from)
                return self
            except PortTaken:
                if attempt == PORT_ATTEMPTS:
                    raise
                self.stop()
                for entry in data.iterdir() if data.is_dir() else ():
                    if entry.name not in stored:  # the failed start's own, nothing stored in it yet
                        if entry.is_dir() and not entry.is_symlink():
                            shutil.rmtree(entry, ignore_errors=True)
                        else:
                            entry.unlink(missing_ok=True)
                self.s3_port, self.filer_port = free_port(), free_port()
        raise AssertionError("unreachable")

    def _lost_port_race(self, log_from: int) -> bool:
        with self.log_path.open("rb") as log:
            log.seek(log_from)
            return lost_port_race(log.read().decode(errors="replace"))

    def wait_ready(self, timeout: float, log_from: int = 0) -> None:
        """Poll until the S3 gateway answers and the bucket accepts a signed listing."""
        store = S3Store(
            self.bucket, endpoint=self.endpoint, access_key_id=self.access_key,
            secret_access_key=self.secret_key, region="us-east-1",
            client_options={"allow_http": True, "timeout": "5s"},
            retry_config={"max_retries": 0},
        )
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            # One of weed mini's servers failing to bind may not end the process: read its log.
            if self._lost_port_race(log_from):
                raise PortTaken(f"weed mini lost a port: {self.log_tail()}")
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited: {self.log_tail()}")
            if self._answers_http():
                try:
                    obstore.list(store).collect()
                    return
                except Exception as exc:  # noqa: BLE001 - still starting; report the last one
                    last = exc
            time.sleep(0.2)
        raise TimeoutError(f"SeaweedFS S3 not ready after {timeout}s ({last}): {self.log_tail()}")

    def _answers_http(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint, timeout=1).close()
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 3) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds: its data is thrown away anyway.

        After uploads, weed mini can take well over ten seconds to shut down cleanly.
        """
        proc, self.process = self.process, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    def __enter__(self) -> SeaweedServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""The multipart-upload requests lifeboat signs itself, against a scripted S3 transport."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlsplit

import pytest

from lifeboat.errors import OperationFailed, RepositoryUnavailable, Unsupported, UsageError
from lifeboat.store.base import IncompleteUpload
from lifeboat.store.s3 import S3Store
from lifeboat.store.s3_uploads import MultipartUploads, PendingUpload
from lifeboat.store.sigv4 import AwsCredentials

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEBaSESSIONTOKEN"
NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


class ScriptedS3:
    """Answers each request with the next scripted (status, body) and records what was asked."""

    def __init__(self, *answers: tuple[int, str | bytes]) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    def __call__(self, method: str, url: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
        self.requests.append((method, url, dict(headers)))
        status, body = self.answers.pop(0)
        return status, body.encode() if isinstance(body, str) else body

    def query(self, index: int) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.requests[index][1]).query, keep_blank_values=True))


def uploads_page(*uploads: tuple[str, str], truncated: str = "", extra: str = "") -> str:
    items = "".join(f"<Upload><Key>{k}</Key><UploadId>{u}</UploadId>"
                    f"<Initiated>2024-05-01T10:00:00.000Z</Initiated></Upload>" for k, u in uploads)
    more = (f"<IsTruncated>true</IsTruncated><NextKeyMarker>{truncated.split('|')[0]}</NextKeyMarker>"
            f"<NextUploadIdMarker>{truncated.split('|')[1]}</NextUploadIdMarker>") if truncated else (
        "<IsTruncated>false</IsTruncated>")
    return f'<?xml version="1.0"?><ListMultipartUploadsResult {NS}>{more}{items}{extra}</ListMultipartUploadsResult>'


def error(code: str) -> str:
    return f"<Error><Code>{code}</Code><Message>no</Message><RequestId>1</RequestId></Error>"


def client(transport: ScriptedS3) -> MultipartUploads:
    return MultipartUploads("http://127.0.0.1:8333/bkt", AwsCredentials("AKIDEXAMPLE", SECRET, TOKEN),
                            "us-east-1", "S3 bucket bkt at http://127.0.0.1:8333", transport=transport,
                            now=lambda: NOW)


def test_listing_follows_both_markers_until_the_last_page_and_signs_every_request() -> None:
    s3 = ScriptedS3(
        (200, uploads_page(("repo/clusters/a", "u1"), ("repo/clusters/a", "u2"), truncated="repo/clusters/a|u2")),
        (200, uploads_page(("repo/clusters/b", "u3"))),
    )
    found = client(s3).pending("repo/")
    assert [(u.key, u.upload_id) for u in found] == [("repo/clusters/a", "u1"), ("repo/clusters/a", "u2"),
                                                      ("repo/clusters/b", "u3")]
    assert found[0].initiated == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    assert s3.query(0) == {"uploads": "", "prefix": "repo/"}
    assert s3.query(1) == {"uploads": "", "prefix": "repo/", "key-marker": "repo/clusters/a",
                           "upload-id-marker": "u2"}
    for method, url, headers in s3.requests:
        assert method == "GET" and url.startswith("http://127.0.0.1:8333/bkt/?")
        assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240501/us-east-1/s3/")
        assert headers["x-amz-security-token"] == TOKEN and headers["host"] == "127.0.0.1:8333"


def test_uploads_outside_the_prefix_are_never_returned_even_when_the_server_ignores_it() -> None:
    s3 = ScriptedS3((200, uploads_page(("other/clusters/a", "x"), ("repo-old/clusters/a", "y"),
                                       ("repo/clusters/a", "z"))))
    assert [u.upload_id for u in client(s3).pending("repo/")] == ["z"]


def test_a_truncated_page_without_a_new_marker_is_an_error_not_an_endless_loop() -> None:
    s3 = ScriptedS3((200, uploads_page(("repo/a", "u1"), truncated="|")))
    with pytest.raises(OperationFailed, match="without a new marker"):
        client(s3).pending("repo/")


@pytest.mark.parametrize("answer", [
    (501, error("NotImplemented")),
    (405, error("MethodNotAllowed")),
    (501, "<html>not here</html>"),
    # A server that does not know ?uploads and answers the plain object listing instead.
    (200, f"<ListBucketResult {NS}><IsTruncated>false</IsTruncated></ListBucketResult>"),
])
def test_a_server_without_list_multipart_uploads_is_reported_as_unsupported(answer: tuple[int, str]) -> None:
    with pytest.raises(Unsupported, match="does not support listing multipart uploads"):
        client(ScriptedS3(answer)).pending("repo/")


def test_credentials_without_the_permission_are_unsupported_naming_the_permissions() -> None:
    with pytest.raises(Unsupported, match="s3:ListBucketMultipartUploads"):
        client(ScriptedS3((403, error("AccessDenied")))).pending("repo/")


@pytest.mark.parametrize(("answer", "kind", "words"), [
    ((403, error("SignatureDoesNotMatch")), RepositoryUnavailable, "refused our credentials"),
    ((404, error("NoSuchBucket")), RepositoryUnavailable, "does not exist"),
    ((500, error("InternalError")), RepositoryUnavailable, "InternalError"),
    ((200, "<ListMultipartUploadsResult><Upload>"), OperationFailed, "not S3's XML"),
    ((200, '<!DOCTYPE x [<!ENTITY a "aaaa">]><ListMultipartUploadsResult/>'), OperationFailed, "does not read"),
    ((200, uploads_page(("repo/a", "u")).replace("2024-05-01T10:00:00.000Z", "yesterday")), OperationFailed,
     "unreadable time"),
])
def test_failures_are_one_line_errors_that_never_show_the_secret(
    answer: tuple[int, str], kind: type[Exception], words: str
) -> None:
    with pytest.raises(kind, match=words) as caught:
        client(ScriptedS3(answer)).pending("repo/")
    message = str(caught.value)
    assert "\n" not in message and SECRET not in message and TOKEN not in message
    assert "Signature=" not in message


def test_an_unreachable_endpoint_is_unavailable_without_the_secret() -> None:
    def refuse(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
        raise ConnectionRefusedError(111, "Connection refused")
    uploads = MultipartUploads("http://127.0.0.1:1/bkt", AwsCredentials("AKID", SECRET), "us-east-1", "S3 bucket bkt",
                               transport=refuse)
    with pytest.raises(RepositoryUnavailable, match="could not be reached.*Connection refused") as caught:
        uploads.pending("")
    assert SECRET not in str(caught.value)


def parts_page(*parts: tuple[int, str, int], next_marker: str = "") -> str:
    items = "".join(f"<Part><PartNumber>{n}</PartNumber><LastModified>{t}</LastModified><Size>{s}</Size></Part>"
                    for n, t, s in parts)
    more = (f"<IsTruncated>true</IsTruncated><NextPartNumberMarker>{next_marker}</NextPartNumberMarker>"
            if next_marker else "<IsTruncated>false</IsTruncated>")
    return f"<ListPartsResult {NS}>{more}{items}</ListPartsResult>"


UPLOAD = PendingUpload("repo/clusters/a/backups/x/snapshot.db.zst", "u+1/=", NOW)


def test_parts_add_up_across_pages_and_the_newest_part_time_wins() -> None:
    s3 = ScriptedS3(
        (200, parts_page((1, "2024-05-01T10:00:00Z", 5 << 20), (2, "2024-05-01T11:30:00Z", 5 << 20), next_marker="2")),
        (200, parts_page((3, "2024-05-01T11:00:00Z", 100))),
    )
    parts = client(s3).parts(UPLOAD)
    assert parts is not None and parts.size == (10 << 20) + 100
    assert parts.last_modified == datetime(2024, 5, 1, 11, 30, tzinfo=timezone.utc)
    assert s3.requests[0][1].startswith("http://127.0.0.1:8333/bkt/repo/clusters/a/backups/x/snapshot.db.zst?")
    assert s3.query(0) == {"uploadId": "u+1/="} and s3.query(1) == {"uploadId": "u+1/=", "part-number-marker": "2"}


def test_an_upload_with_no_part_yet_has_no_part_time() -> None:
    parts = client(ScriptedS3((200, parts_page()))).parts(UPLOAD)
    assert parts is not None and parts.size == 0 and parts.last_modified is None


def test_an_upload_finished_since_it_was_listed_has_no_parts_to_report() -> None:
    assert client(ScriptedS3((404, error("NoSuchUpload")))).parts(UPLOAD) is None


def test_abort_sends_a_signed_delete_and_accepts_an_upload_already_gone() -> None:
    s3 = ScriptedS3((204, b""), (404, error("NoSuchUpload")))
    client(s3).abort(UPLOAD.key, UPLOAD.upload_id)
    client(s3).abort(UPLOAD.key, UPLOAD.upload_id)
    assert [r[0] for r in s3.requests] == ["DELETE", "DELETE"]
    assert s3.query(0) == {"uploadId": "u+1/="} and "authorization" in s3.requests[0][2]


def test_an_abort_the_store_refuses_is_an_error() -> None:
    with pytest.raises(Unsupported, match="denied aborting the multipart upload"):
        client(ScriptedS3((403, error("AccessDenied")))).abort(UPLOAD.key, UPLOAD.upload_id)


def test_an_s3_store_without_explicit_keys_says_it_cannot_list_uploads() -> None:
    store = S3Store("bkt", "repo", endpoint="http://127.0.0.1:1")
    with pytest.raises(Unsupported, match="needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        store.incomplete_uploads("clusters/")


def test_an_s3_store_refuses_to_abort_what_is_not_a_multipart_upload() -> None:
    store = S3Store("bkt", "repo", endpoint="http://127.0.0.1:1", access_key_id="AKID", secret_access_key=SECRET)
    with pytest.raises(UsageError, match="not a multipart upload"):
        store.remove_incomplete(IncompleteUpload("clusters/x", 1, NOW))

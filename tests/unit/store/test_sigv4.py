"""SigV4 signing against the examples AWS publishes for S3 ("Signature Calculations for the
Authorization Header"): example credentials, bucket ``examplebucket``, 2013-05-24 00:00:00 UTC."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pytest

from lifeboat.store.sigv4 import AwsCredentials, encode_path, encode_query, sign

EXAMPLE = AwsCredentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
AT = datetime(2013, 5, 24, tzinfo=timezone.utc)
HOST = "https://examplebucket.s3.amazonaws.com"


def signature(headers: dict[str, str]) -> str:
    return headers["authorization"].rpartition("Signature=")[2]


def test_get_object_with_a_range_matches_the_published_signature() -> None:
    headers = sign("GET", f"{HOST}/test.txt", EXAMPLE, "us-east-1", AT, headers={"Range": "bytes=0-9"})
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    assert headers["x-amz-date"] == "20130524T000000Z" and headers["host"] == "examplebucket.s3.amazonaws.com"


def test_put_object_with_a_body_and_an_encoded_key_matches_the_published_signature() -> None:
    body = hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()
    headers = sign("PUT", HOST + encode_path("/test$file.text"), EXAMPLE, "us-east-1", AT,
                   headers={"Date": "Fri, 24 May 2013 00:00:00 GMT", "x-amz-storage-class": "REDUCED_REDUNDANCY"},
                   payload_sha256=body)
    assert signature(headers) == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"


def test_a_subresource_without_a_value_is_signed_as_name_equals() -> None:
    # "GET Bucket Lifecycle": the same shape as ?uploads, the ListMultipartUploads request.
    headers = sign("GET", f"{HOST}/?lifecycle", EXAMPLE, "us-east-1", AT)
    assert signature(headers) == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"


@pytest.mark.parametrize("query", ["max-keys=2&prefix=J", "prefix=J&max-keys=2"])
def test_query_parameters_are_signed_sorted_whatever_their_order(query: str) -> None:
    headers = sign("GET", f"{HOST}/?{query}", EXAMPLE, "us-east-1", AT)
    assert signature(headers) == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"


def test_a_session_token_is_sent_and_signed() -> None:
    with_token = AwsCredentials(EXAMPLE.access_key_id, EXAMPLE.secret_access_key, "TOKEN/+=")
    headers = sign("GET", f"{HOST}/?lifecycle", with_token, "us-east-1", AT)
    assert headers["x-amz-security-token"] == "TOKEN/+="
    assert "x-amz-security-token" in headers["authorization"].split("SignedHeaders=")[1].split(",")[0]
    assert signature(headers) != "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"


def test_keys_and_query_values_are_encoded_as_s3_expects() -> None:
    assert encode_path("/b/clusters/a+b/x=1@y,z:w") == "/b/clusters/a%2Bb/x%3D1%40y%2Cz%3Aw"
    assert encode_query({"uploads": "", "prefix": "t/clusters/", "key-marker": "a b"}) == (
        "key-marker=a%20b&prefix=t%2Fclusters%2F&uploads=")


def test_credentials_never_show_the_secret_or_token_in_their_repr() -> None:
    shown = repr(AwsCredentials("AKID", "very-secret", "session-secret"))
    assert "AKID" in shown and "very-secret" not in shown and "session-secret" not in shown

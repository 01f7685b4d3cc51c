"""What an S3 store's failures say: the cause, not only that a request failed."""

from __future__ import annotations

import socket

import pytest

from lifeboat.errors import RepositoryUnavailable
from lifeboat.store.s3 import S3Store


def test_a_store_nothing_listens_for_is_unavailable_naming_the_refused_connection() -> None:
    with socket.socket() as sock:  # a loopback port that was free a moment ago, and stays unbound
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        store = S3Store("bucket", endpoint=f"http://127.0.0.1:{port}", access_key_id="AKEXAMPLE",
                        secret_access_key="not-a-secret")
        with pytest.raises(RepositoryUnavailable) as caught:
            store.get_bytes("some/key")
    assert "error sending request (connection refused)" in str(caught.value)
    assert "not-a-secret" not in str(caught.value) and "\n" not in str(caught.value)


IMDS_REFUSED = ("Generic S3 error: Error performing PUT http://169.254.169.254/latest/api/token in 1.2ms - "
                "Server returned non-2xx status code: 403 Forbidden: resolve_deny: denied destination")


@pytest.mark.parametrize("failure", [IMDS_REFUSED, IMDS_REFUSED.replace("169.254.169.254", "169.254.170.2")])
def test_no_credentials_given_and_none_from_the_metadata_service_says_so(failure: str) -> None:
    """It said "failed while reading lifeboat-repository.json: ... 403 Forbidden ...; check the
    endpoint and network": the 403 was the metadata service's, asked for credentials none gave."""
    from obstore.exceptions import GenericError

    with pytest.raises(RepositoryUnavailable) as caught:
        S3Store("bucket", endpoint="http://127.0.0.1:1")._raise(GenericError(failure), "reading", "a key")
    assert "no S3 credentials were given" in str(caught.value) and "AWS_ACCESS_KEY_ID" in str(caught.value)
    keyed = S3Store("bucket", endpoint="http://127.0.0.1:1", access_key_id="AKEXAMPLE", secret_access_key="x")
    with pytest.raises(RepositoryUnavailable, match="failed while reading a key"):
        keyed._raise(GenericError(failure), "reading", "a key")

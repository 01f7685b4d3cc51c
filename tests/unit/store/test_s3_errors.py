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

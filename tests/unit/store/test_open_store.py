"""open_store: which URL opens which backend, and which are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeboat.errors import UsageError
from lifeboat.store import LocalStore, MemoryStore, S3Store, open_store
from lifeboat.store.s3 import _without_credentials
from tests.support.cli import Cli

NO_AWS: dict[str, str] = {}


def test_file_url_opens_a_local_store(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/repo")

    assert isinstance(store, LocalStore)
    assert store.root == tmp_path / "repo"
    assert store.url == f"file://{tmp_path}/repo"


def test_plain_paths_open_a_local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    absolute = open_store(str(tmp_path / "abs"))
    relative = open_store("rel/repo")

    assert isinstance(absolute, LocalStore) and absolute.root == tmp_path / "abs"
    assert isinstance(relative, LocalStore) and relative.root == tmp_path / "rel" / "repo"


def test_file_url_with_a_remote_host_is_refused() -> None:
    with pytest.raises(UsageError, match="names host 'server'"):
        open_store("file://server/share")


def test_s3_url_opens_an_s3_store_without_io() -> None:
    store = open_store("s3://my-bucket/clusters/prod/", NO_AWS)

    assert isinstance(store, S3Store)
    assert store.url == "s3://my-bucket/clusters/prod"
    assert open_store("s3://my-bucket", NO_AWS).url == "s3://my-bucket"


def test_s3_url_without_bucket_is_refused() -> None:
    with pytest.raises(UsageError, match="no bucket"):
        open_store("s3:///prefix", NO_AWS)


def test_credentials_in_the_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(UsageError) as caught:
        open_store("s3://AKIDEXAMPLE:topsecret@bucket/prefix", NO_AWS)

    assert "topsecret" not in str(caught.value) and "AKIDEXAMPLE" not in str(caught.value)
    assert "AWS_" in str(caught.value)


@pytest.mark.parametrize("url", ["s3://bucket/prefix?region=eu-west-1&secret=topsecret", "s3://bucket/p#topsecret",
                                 "file:///var/backups/lifeboat?topsecret"])
def test_a_query_or_fragment_in_the_url_is_refused_not_ignored_and_not_echoed(url: str) -> None:
    # Before, s3://bucket/prefix?region=... opened s3://bucket/prefix with the region ignored.
    with pytest.raises(UsageError) as caught:
        open_store(url, NO_AWS)

    assert "topsecret" not in str(caught.value) and "ignored" in str(caught.value)


def test_endpoint_credentials_never_reach_messages() -> None:
    assert _without_credentials("http://user:pw@127.0.0.1:9000/") == "http://127.0.0.1:9000/"
    assert _without_credentials("https://s3.example.com") == "https://s3.example.com"


def test_memory_url_opens_an_empty_test_store() -> None:
    store = open_store("memory://unit")

    assert isinstance(store, MemoryStore)
    assert store.url == "memory://unit"
    assert list(store.list()) == []


@pytest.mark.parametrize("url", ["gs://bucket/x", "az://container/x", "GS://bucket"])
def test_cloud_schemes_not_yet_supported_are_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError, match="not supported yet"):
        open_store(url)


def test_unknown_scheme_names_itself_and_the_supported_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown repository scheme 'ftp'.*file://, s3://"):
        open_store("ftp://host/x")


def test_empty_url_asks_for_a_repository() -> None:
    with pytest.raises(UsageError, match="LIFEBOAT_REPO"):
        open_store("")


def test_a_file_url_of_one_slash_is_its_absolute_path_and_a_scheme_without_slashes_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli) -> None:
    """`--repo file:/abs/path` (RFC 8089's short form) wrote the backups to ./file:/abs/path
    under the working directory (for a service, on the root disk)."""
    monkeypatch.chdir(tmp_path)
    store = open_store(f"file:{tmp_path / 'repo'}")
    assert isinstance(store, LocalStore) and store.root == tmp_path / "repo"
    for typo in ("file:repo", "s3:bucket/prefix", "S3:bucket", "gs:bucket"):
        with pytest.raises(UsageError, match="is not"):
            open_store(typo)
        code, _, err = cli("list", "--repo", typo)
        assert code == 3 and "is not" in err, err
    code, _, err = cli("list", "--repo", f"file:{tmp_path / 'nothing'}")
    assert code == 2 and f"file://{tmp_path / 'nothing'}" in err, err
    assert [p.name for p in tmp_path.iterdir()] == []

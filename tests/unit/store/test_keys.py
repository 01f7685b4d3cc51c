"""Key and prefix validation shared by every backend."""

from __future__ import annotations

import pytest

from lifeboat.errors import UsageError
from lifeboat.store import check_key, check_prefix


@pytest.mark.parametrize(
    "key",
    ["a", "clusters/prod/backups/20240501T100000Z-abc/manifest.json", "x/a+b=c@d,e:f", "a..b", ".hidden"],
)
def test_valid_keys_are_returned_unchanged(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", "/a", "a/", "a//b", "..", "../a", "a/..", "a/./b", "a b", "a\nb", "ä", "a?b", "x" * 1025],
)
def test_invalid_keys_are_usage_errors(key: str) -> None:
    with pytest.raises(UsageError, match="invalid object key"):
        check_key(key)


@pytest.mark.parametrize("prefix", ["", "a", "a/", "clusters/prod/backups/", "a/b."])
def test_prefixes_may_be_empty_or_end_with_a_slash(prefix: str) -> None:
    assert check_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "/a", "../", "a//", "a/../b", "a/.."])
def test_prefixes_that_escape_or_are_absolute_are_refused(prefix: str) -> None:
    with pytest.raises(UsageError):
        check_prefix(prefix)

"""An S3 store that drips, stalls or cuts its answers: every request ends within its Pace.

Before, a store sending a byte a second held one request for up to obstore's 12 h timeout
(``read_timeout`` restarts with every byte): a listing, a backup's read, a capture upload.
The server is a real HTTP server on loopback (tests/support/fake_s3.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from lifeboat.errors import RepositoryUnavailable
from lifeboat.store import ObjectStore
from lifeboat.store.pace import Pace
from lifeboat.store.s3 import SMALL_REQUEST, STREAM_RANGE
from tests.support.fake_s3 import FakeS3, fake_s3

MiB = 1 << 20
# A second for any request plus 8 MiB/s: an 8 MiB range may take 2 s, a HEAD or a listing page 1.1 s.
QUICK = Pace(min_rate=8 * MiB, allowance=1.0, idle=1.0)


@pytest.fixture
def fake() -> Iterator[FakeS3]:
    with fake_s3() as server:
        yield server


CALLS: dict[str, Callable[[ObjectStore], object]] = {
    "get_bytes": lambda s: s.get_bytes("a/key"),
    "get_range": lambda s: s.get_range("a/key", 0, 1000),
    "list": lambda s: list(s.list("a/")),
    "folders": lambda s: s.folders(""),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_an_answer_dripped_a_byte_at_a_time_is_given_up_within_the_pace(fake: FakeS3, call: str) -> None:
    fake.put("a/key", b"x" * 2000)
    fake.drip, fake.piece = 0.05, 1  # 20 bytes a second: 100 s for the object, longer for a listing

    started = time.monotonic()
    with pytest.raises(RepositoryUnavailable) as caught:
        CALLS[call](fake.store(QUICK))
    elapsed = time.monotonic() - started

    # Each try ends at its limit (at most 2 s); obstore retries 3 times.
    assert elapsed < 15, f"{call} took {elapsed:.0f} s"
    message = str(caught.value)
    assert "did not answer in time, or sent its answer too slowly" in message
    assert "\n" not in message and "fake-secret" not in message


def test_a_small_object_dripped_is_given_up_at_a_small_requests_limit_not_a_large_ranges(fake: FakeS3) -> None:
    """Every read started with an 8 MiB range, so a manifest or the marker waited 8 MiB's time per try."""
    fake.put("a/manifest.json", b"{}" * 1000)
    fake.drip, fake.piece = 0.05, 1
    pace = Pace(min_rate=MiB, allowance=0.5, idle=1.0)  # a small request 1.5 s, an 8 MiB range 8.5 s

    started = time.monotonic()
    with pytest.raises(RepositoryUnavailable, match="too slowly"):
        fake.store(pace).get_bytes("a/manifest.json")
    assert time.monotonic() - started < 4 * pace.limit(SMALL_REQUEST) + 3


def test_an_answer_that_stops_midway_is_given_up_after_the_idle_time(fake: FakeS3) -> None:
    fake.put("a/key", b"x" * 100_000)
    fake.stall_after = 10_000

    started = time.monotonic()
    with pytest.raises(RepositoryUnavailable, match="too slowly"):
        fake.store(QUICK).get_bytes("a/key")
    assert time.monotonic() - started < 15


def test_an_upload_the_store_reads_a_drip_at_a_time_is_given_up_within_the_pace(fake: FakeS3) -> None:
    fake.read_drip, fake.piece = 0.05, 1024  # 20 KiB/s: a 1 MiB PUT would take 50 s

    started = time.monotonic()
    with pytest.raises(RepositoryUnavailable, match="too slowly"):
        fake.store(QUICK).put_bytes("a/segment", b"y" * MiB)
    assert time.monotonic() - started < 15


def test_a_large_object_on_a_slow_live_link_arrives_whatever_its_total_time(fake: FakeS3) -> None:
    """No fixed total: 24 MiB at 6 MiB/s takes 4 s, twice what one request may take, and arrives."""
    data = bytes(range(256)) * (24 * MiB // 256)
    fake.put("a/snapshot", data)
    fake.drip, fake.piece = 0.01, 64 << 10  # about 6 MiB/s
    pace = Pace(min_rate=4 * MiB, allowance=0.5, idle=1.0)  # an 8 MiB range may take 2.5 s

    started = time.monotonic()
    got = b"".join(fake.store(pace).get_stream("a/snapshot"))
    elapsed = time.monotonic() - started

    assert got == data
    assert elapsed > pace.limit(STREAM_RANGE)


def test_a_body_cut_short_says_the_store_closed_the_connection_early(fake: FakeS3) -> None:
    fake.put("a/key", b"x" * 5000)
    fake.cut_after = 1000

    with pytest.raises(RepositoryUnavailable) as caught:
        fake.store(QUICK).get_bytes("a/key")
    assert "closed the connection before its answer was complete" in str(caught.value)


def test_a_content_length_shorter_than_the_object_is_not_taken_for_the_whole_object(fake: FakeS3) -> None:
    """A proxy announcing 100 bytes too few: the answer ends early and looks complete."""
    fake.put("a/key", b"x" * 5000)
    fake.short_length = 100

    with pytest.raises(RepositoryUnavailable, match="sent 4900 bytes from offset 0 of a/key when asked for 5000"):
        fake.store(QUICK).get_bytes("a/key")


def test_a_range_shorter_than_asked_mid_object_is_refused_not_taken_for_the_objects_end(fake: FakeS3) -> None:
    """get_range returned the 900 bytes a proxy's short Content-Length let through: a restore reading
    4 MiB ranges then decompressed a stream with a hole, and blamed the backup (integrity failure)."""
    fake.put("a/key", b"x" * 5000)
    store = fake.store(QUICK)
    assert len(store.get_range("a/key", 4500, 6000)) == 500  # fewer at the real end, as the contract says
    fake.short_length = 100

    with pytest.raises(RepositoryUnavailable, match="sent 900 bytes from offset 0 of a/key when asked for 1000"):
        store.get_range("a/key", 0, 1000)


def test_an_object_replaced_between_two_ranges_of_one_read_is_refused(fake: FakeS3) -> None:
    fake.put("a/big", b"1" * (STREAM_RANGE + 10))
    stream = fake.store(QUICK).get_stream("a/big", chunk_size=STREAM_RANGE)
    assert next(stream) == b"1" * SMALL_REQUEST  # the first range
    fake.put("a/big", b"2" * (STREAM_RANGE + 10))

    with pytest.raises(Exception, match="was replaced while it was being read"):
        next(stream)


@pytest.mark.parametrize("misbehaviour", ["drip", "stall"])
def test_the_multipart_listing_requests_lifeboat_signs_itself_keep_the_pace(fake: FakeS3, misbehaviour: str) -> None:
    """ListMultipartUploads and friends are lifeboat's own requests, not obstore's: same limits."""
    from lifeboat.store.s3_uploads import send_http

    fake.put("a/key", b"x" * 2000)
    pace = QUICK
    if misbehaviour == "drip":
        fake.drip, fake.piece = 0.05, 1
    else:
        fake.stall_after = 100
        pace = Pace(min_rate=QUICK.min_rate, allowance=3.0, idle=1.0)  # the pause, not the pace, ends it

    started = time.monotonic()
    with pytest.raises(TimeoutError, match="too slowly" if misbehaviour == "drip" else "sent nothing for 1 s"):
        send_http("GET", f"{fake.endpoint}/{fake.bucket}/a/key", {}, pace=pace)
    assert time.monotonic() - started < 5
    fake.drip, fake.stall_after = 0, None
    assert send_http("GET", f"{fake.endpoint}/{fake.bucket}/a/key", {}, pace=QUICK) == (200, b"x" * 2000)


@pytest.mark.parametrize("call", ["get_bytes", "list", "put_bytes", "incomplete_uploads"])
def test_a_clock_too_far_off_the_stores_is_named_not_taken_for_wrong_credentials(fake: FakeS3, call: str) -> None:
    """It said "refused our credentials (RequestTimeTooSkewed) ...; check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"."""
    fake.refuse = (403, "RequestTimeTooSkewed")
    store = fake.store(QUICK)
    calls: dict[str, Callable[[], object]] = {
        "get_bytes": lambda: store.get_bytes("a/key"), "list": lambda: list(store.list("a/")),
        "put_bytes": lambda: store.put_bytes("a/key", b"x"), "incomplete_uploads": lambda: store.incomplete_uploads(""),
    }

    with pytest.raises(RepositoryUnavailable) as caught:
        calls[call]()
    message = str(caught.value)
    assert "RequestTimeTooSkewed" in message and "clock" in message and "NTP" in message
    assert "AWS_SECRET_ACCESS_KEY" not in message and "fake-secret" not in message


def test_a_store_pickled_for_a_child_process_keeps_its_pace_and_works(fake: FakeS3) -> None:
    """The chain survey sends the store to a child by pickle: the per-size clients and their locks
    (this change) broke that ("cannot pickle '_thread.lock' object")."""
    import pickle

    fake.put("a/key", b"x" * 10)
    store = fake.store(QUICK)
    store.get_bytes("a/key")

    copy = pickle.loads(pickle.dumps(store))

    assert copy.get_bytes("a/key") == b"x" * 10 and copy._pace == QUICK
    fake.drip, fake.piece = 0.05, 1
    fake.put("a/key", b"x" * 2000)
    started = time.monotonic()
    with pytest.raises(RepositoryUnavailable, match="too slowly"):
        copy.get_bytes("a/key")
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(("refusal", "said"), [
    ((503, ""), "the store answered HTTP 503 Service Unavailable"),
    ((501, "NotImplemented"), "failed while reading a/key: NotImplemented;"),
    ((500, "InternalError"), "failed while reading a/key: InternalError;"),
])
def test_a_storm_of_server_errors_ends_after_the_retries_saying_what_the_store_answered(
        fake: FakeS3, refusal: tuple[int, str], said: str) -> None:
    """A bare 503 was cut mid-word ("... non-2xx status code: 503 Se"), the reason lost."""
    fake.refuse = refusal

    started = time.monotonic()
    with pytest.raises(RepositoryUnavailable) as caught:
        fake.store(QUICK).get_bytes("a/key")

    assert said in str(caught.value) and "\n" not in str(caught.value)
    assert time.monotonic() - started < 10
    assert len(fake.requests) >= 2, "retried"


def test_a_listing_whose_pages_repeat_for_ever_is_given_up(fake: FakeS3) -> None:
    """A store (or proxy) that ignores the continuation token and says "truncated" every time:
    list and folders requested the same page for ever, holding all of it in memory."""
    for i in range(1001):
        fake.put(f"a/k{i:04d}/m", b"x")
    fake.repeat_pages = True
    store = fake.store(Pace(min_rate=8 * MiB, allowance=0.3, idle=1.0))  # folders: 10 pages' time, 4 s

    with pytest.raises(RepositoryUnavailable, match="listed a/k0000/m twice while listing a/: its listing repeats"):
        list(store.list("a/"))
    started = time.monotonic()
    with pytest.raises(RepositoryUnavailable, match=r"did not finish listing the folders under a/ in 4 s"):
        store.folders("a/")
    assert time.monotonic() - started < 10
    time.sleep(0.5)  # the page asked for as the call was abandoned
    asked = len(fake.requests)
    time.sleep(1)
    assert len(fake.requests) == asked, "the abandoned listing stopped asking"


def test_a_store_that_ignores_range_requests_is_named_so(fake: FakeS3) -> None:
    """Every read is by ranges now (get_stream too): obstore's "Received non-partial response when
    range requested" is said in lifeboat's words."""
    fake.put("a/key", b"x" * 100)
    fake.ignore_range = True

    with pytest.raises(RepositoryUnavailable) as caught:
        fake.store(QUICK).get_bytes("a/key")
    assert "answered a request for a range with the whole object (it ignores Range" in str(caught.value)


@pytest.mark.parametrize("odd", ["p/clusters//x", "p/clusters/prod/backups/./x"])
def test_an_object_named_so_the_s3_client_cannot_list_it_is_named_with_what_to_do(fake: FakeS3, odd: str) -> None:
    """Another tool's object with an empty or '.' segment makes obstore refuse the whole listing:
    every list, backup and prune failed 'check the endpoint and network' (exit 2), for ever."""
    from lifeboat.errors import OperationFailed

    fake.put("p/clusters/prod/manifests/20261201T000000Z-aaaaaa.json", b"{}")
    fake.put(odd, b"")

    with pytest.raises(OperationFailed) as caught:
        list(fake.store(QUICK, "p").list(""))
    message = str(caught.value)
    assert f"holds an object lifeboat's S3 client cannot list, '{odd}'" in message
    assert "remove or rename that object" in message and "\n" not in message


def test_the_requests_lifeboat_signs_itself_go_through_the_configured_proxy_within_the_pace(
        fake: FakeS3, monkeypatch: pytest.MonkeyPatch) -> None:
    """Made with http.client directly (an earlier form of this change), they ignored HTTP(S)_PROXY,
    which urllib, and so prune's multipart listing, had always honoured."""
    from lifeboat.store.s3_uploads import send_http

    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", fake.endpoint)  # the fake serves absolute-URL requests as a proxy would
    fake.put("a/key", b"x" * 2000)
    url = f"http://s3.example.invalid/{fake.bucket}/a/key"

    assert send_http("GET", url, {}, pace=QUICK) == (200, b"x" * 2000)
    assert fake.requests[-1] == ("GET", url)
    fake.drip, fake.piece = 0.05, 1
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="too slowly"):
        send_http("GET", url, {}, pace=QUICK)
    assert time.monotonic() - started < 5


def test_ranges_read_at_once_on_a_slow_link_are_each_given_the_time_they_share(fake: FakeS3) -> None:
    """A restore reads 4 ranges at once: on a link just above the Pace's rate each got a quarter of
    it and timed out, where one at a time would have arrived. (Here obstore's retries, which read
    on from where a range broke off, still bring the bytes; with real limits every try lasts past
    obstore's 30 s retry_timeout, so none is retried: hence the count of requests.)"""
    from lifeboat.catalog.streams import ranged

    data = bytes(range(256)) * (4 * MiB // 256)
    fake.put("a/snapshot", data)
    fake.link_rate, fake.piece = 2 * MiB, 32 << 10  # 2 MiB/s for every answer together: 2 s for the 4
    pace = Pace(min_rate=MiB, allowance=0.5, idle=2.0)  # a 1 MiB range: 1.5 s alone, 4.5 s as one of 4
    store = fake.store(pace)

    got = b"".join(bytes(chunk) for chunk in ranged(lambda start, end: store.get_range("a/snapshot", start, end),
                                                     len(data), MiB, 4))
    assert got == data
    assert len([path for method, path in fake.requests if method == "GET"]) == 4, "no range timed out"

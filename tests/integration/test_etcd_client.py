"""lifeboat's etcd client against real etcd 3.5.1 and 3.4.23 members, over mTLS."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeboat.etcdapi.model import ReceivedEvents
from lifeboat.errors import EtcdAuthError, EtcdUnavailable, OperationFailed, UsageError
from lifeboat.etcd import (
    Compare,
    ConnectionSettings,
    Delete,
    EtcdClient,
    EventType,
    Get,
    Put,
    RevisionCompacted,
    Target,
    TlsConfig,
)
from tests.support.binaries import EtcdRelease
from tests.support.etcd import EtcdCluster, EtcdMember
from tests.support.etcd_load import load_keys, numbered
from tests.support.pki import Pki
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


def tls(pki: Pki) -> TlsConfig:
    return TlsConfig(ca=pki.ca, cert=pki.client.cert, key=pki.client.key)


def connect(endpoints: list[str], tls_config: TlsConfig | None, dial: float = 2, command: float = 5) -> EtcdClient:
    return EtcdClient(ConnectionSettings(tuple(endpoints), tls_config, dial_timeout=dial, command_timeout=command))


@pytest.fixture(scope="module")
def cluster(
    release: EtcdRelease, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EtcdCluster]:
    with EtcdCluster(release, tmp_path_factory.mktemp(f"etcd{release.version}"), size=3, pki=pki) as c:
        yield c


@pytest.fixture
def client(cluster: EtcdCluster, pki: Pki) -> Iterator[EtcdClient]:
    with connect(cluster.endpoints, tls(pki)) as c:
        yield c


def wait_applied(client: EtcdClient, endpoints: list[str], revision: int) -> None:
    deadline = time.monotonic() + 30  # a follower on a loaded 2-core machine can lag seconds
    while any(client.status(e).revision < revision for e in endpoints):
        assert time.monotonic() < deadline, f"members did not reach revision {revision}"
        time.sleep(0.05)


def test_status_describes_the_member_behind_the_endpoint(
    client: EtcdClient, cluster: EtcdCluster, release: EtcdRelease
) -> None:
    statuses = [client.status(e) for e in cluster.endpoints]
    assert {s.version for s in statuses} == {release.version}
    assert len({s.member_id for s in statuses}) == 3
    assert len({s.leader_id for s in statuses}) == 1
    assert statuses[0].leader_id in {s.member_id for s in statuses}
    assert sum(s.is_leader for s in statuses) == 1
    assert all(s.db_size > 0 and 0 < s.db_size_in_use <= s.db_size for s in statuses)
    assert all(s.raft_term > 0 and s.raft_applied_index > 0 for s in statuses)
    assert not any(s.is_learner or s.errors for s in statuses)
    assert statuses[1].endpoint == cluster.endpoints[1]


def test_member_list_names_every_member_and_the_cluster(client: EtcdClient, cluster: EtcdCluster) -> None:
    listed = client.member_list()
    assert sorted(m.name for m in listed.members) == ["m0", "m1", "m2"]
    assert sorted(u for m in listed.members for u in m.client_urls) == sorted(cluster.endpoints)
    assert sorted(u for m in listed.members for u in m.peer_urls) == sorted(m.peer_url for m in cluster.members)
    assert listed.cluster_id == client.status(cluster.endpoints[0]).cluster_id != 0
    assert not any(m.is_learner for m in listed.members)


def test_paged_range_stays_at_the_revision_of_its_first_page(client: EtcdClient) -> None:
    for i in range(25):
        client.put(f"/paged/{i:03d}", b"v%d" % i)
    pages = client.range_pages("/paged/", prefix=True, page_size=10)
    first = next(pages)
    for i in range(25, 35):
        client.put(f"/paged/{i:03d}", b"late")
    client.put("/paged/000", b"changed")
    rest = [kv for page in pages for kv in page.kvs]
    keys = [kv.key for kv in first.kvs + tuple(rest)]
    assert keys == [f"/paged/{i:03d}".encode() for i in range(25)]
    assert first.kvs[0].value == b"v0"
    assert all(kv.mod_revision <= first.revision for kv in rest)
    assert len(list(client.range_all("/paged/", prefix=True, page_size=7))) == 35


def test_put_get_delete_and_conditional_writes(client: EtcdClient) -> None:
    first = client.put("/kv/a", b"1")
    second = client.put("/kv/a", b"2")
    assert second > first
    got = client.get("/kv/a")
    assert got is not None and got.value == b"2" and got.version == 2 and got.create_revision == first
    assert client.get("/kv/missing") is None

    assert client.put_if_absent("/kv/once", b"x") is True
    assert client.put_if_absent("/kv/once", b"y") is False
    assert client.get("/kv/once").value == b"x"  # type: ignore[union-attr]

    outcome = client.txn(
        [Compare("/kv/a", Target.VALUE, "==", b"2"), Compare("/kv/a", Target.MOD_REVISION, "==", second)],
        [Put("/kv/b", b"from-txn"), Get("/kv/a")],
        [Delete("/kv/a")],
    )
    assert outcome.succeeded and outcome.revision == second + 2
    assert outcome.outcomes[1].kvs[0].value == b"2"  # type: ignore[union-attr]
    failed = client.txn([Compare("/kv/a", Target.VERSION, ">", 5)], [Delete("/kv/a")], [Get("/kv/b")])
    assert not failed.succeeded and failed.outcomes[0].kvs[0].value == b"from-txn"  # type: ignore[union-attr]
    assert client.get("/kv/a") is not None
    assert client.delete_range("/kv/", prefix=True) == 3
    assert client.range("/kv/", prefix=True).count == 0


def test_watch_sees_puts_and_deletes_after_it_started(client: EtcdClient) -> None:
    with client.watch("/watched/", prefix=True) as watch:
        revision = client.put("/watched/x", b"hello")
        client.delete_range("/watched/x")
        put = watch.next_event(timeout=30)
        deleted = watch.next_event(timeout=30)
    assert put is not None and put.type is EventType.PUT
    assert (put.kv.key, put.kv.value, put.kv.mod_revision) == (b"/watched/x", b"hello", revision)
    assert deleted is not None and deleted.type is EventType.DELETE and deleted.kv.key == b"/watched/x"
    assert watch.next_event(timeout=0.1) is None


def test_watch_replays_history_from_a_start_revision(client: EtcdClient) -> None:
    revision = client.put("/replay/k", b"old")
    client.put("/replay/k", b"new")
    with client.watch("/replay/k", start_revision=revision) as watch:
        values = [watch.next_event(timeout=30), watch.next_event(timeout=30)]
    assert [e.kv.value for e in values if e] == [b"old", b"new"]


@pytest.mark.parametrize("lag", [0.0, 0.2], ids=["live", "lagging"])
def test_a_feed_left_untaken_holds_a_bounded_amount_and_loses_no_event(client: EtcdClient, lag: float) -> None:
    bound = 256 << 10
    start = client.put("/feed/start", b"")
    value = b"v" * 4096
    with client.follow(start + 1, lag=lag, max_waiting_bytes=bound) as feed:
        revisions = [client.put(f"/feed/k{i % 100}", value + str(i).encode()) for i in range(2000)]  # 8 MB
        time.sleep(1)  # nothing taken meanwhile: the reader waits for room, etcd holds the rest
        held = feed.waiting_bytes
        seen: list[tuple[int, bytes, bytes]] = []
        deadline = time.monotonic() + 60
        while not seen or seen[-1][0] < revisions[-1]:
            assert time.monotonic() < deadline, "the feed stopped before the last put"
            for batch in feed.take(1):
                seen.extend((e.kv.mod_revision, e.kv.key, e.kv.value) for e in batch.events)
    assert held < 2 << 20, f"{held} bytes waited in the feed, bound {bound}"
    assert [r for r, _, _ in seen] == revisions, "every revision once, in order"
    assert all(v == value + str(i).encode() and k == f"/feed/k{i % 100}".encode()
               for i, (_, k, v) in enumerate(seen))


def test_a_lagging_feed_reads_every_revision_once_in_passes_each_bounded_by_when_it_was_written(
        cluster: EtcdCluster, pki: Pki) -> None:
    """Passes 0.2 s apart while puts go on: every revision once, in order; a response of every
    pass after the first says when its revisions did not exist yet, and none was written before.

    One member for the puts and the watch: a follower acknowledges a put once it applied it
    itself, so "did not exist" and "acknowledged" are told by the same member."""
    with connect(cluster.endpoints[:1], tls(pki)) as client:
        start = client.put("/lagging/start", b"")
        acked: dict[int, float] = {}
        arrived: list[ReceivedEvents] = []
        with client.follow(start + 1, lag=0.2) as feed:
            for i in range(400):
                revision = client.put(f"/lagging/k{i % 7}", str(i).encode())
                acked[revision] = time.time()
                time.sleep(0.004)
                arrived.extend(feed.take(0))
            deadline = time.monotonic() + 30
            while not arrived or arrived[-1].events[-1].kv.mod_revision < revision:
                assert time.monotonic() < deadline, "the feed stopped before the last put"
                arrived.extend(feed.take(1))
            assert not feed.ended
    revisions = [e.kv.mod_revision for r in arrived for e in r.events]
    assert revisions == sorted(acked), "every revision once, in order"
    passes = sorted({r.written_after for r in arrived if r.written_after is not None})
    assert len(passes) >= 4, f"{len(passes)} passes after the first in {acked[revision] - acked[start + 1]:.1f}s"
    for response in arrived:
        bound = response.written_after
        assert all(bound is None or bound < acked[e.kv.mod_revision] <= response.received + 1
                   for e in response.events)
        assert all(e.kv.value == str(e.kv.mod_revision - start - 1).encode() for e in response.events)


def test_a_lagging_feed_told_to_hurry_reads_what_was_written_before_at_once(client: EtcdClient) -> None:
    first = client.put("/hurried/k", b"1")
    with client.follow(first, lag=60) as feed:
        assert [e.kv.mod_revision for r in feed.take(30) for e in r.events] == [first]
        written = client.put("/hurried/k", b"2")
        ticket = feed.hurry()
        deadline = time.monotonic() + 10  # a minute before the next pass would have begun
        while not feed.passed(ticket):
            assert time.monotonic() < deadline, "no pass after hurry()"
            time.sleep(0.05)
        assert [e.kv.mod_revision for r in feed.take(0) for e in r.events] == [written]
        assert feed.passed(ticket) and not feed.passed(feed.hurry())


def test_a_pass_cut_at_its_deadline_is_read_on_by_the_next_without_a_loss_or_a_repeat(
        cluster: EtcdCluster, pki: Pki) -> None:
    """A pass held up past its deadline (here: nothing taken, so its reader waits for room)
    ends without an error; the next pass reads on from the first revision not queued."""
    with connect(cluster.endpoints[:1], tls(pki), command=0.5) as client:  # passes end after 1.5 s
        start = client.put("/cut-pass/start", b"")
        value = b"v" * 1024
        # etcd sends a watcher behind at most 1,000 revisions a response: three here, of 1 MB or less.
        revisions = [client.put(f"/cut-pass/k{i % 50}", value + str(i).encode()) for i in range(2500)]
        with client.follow(start + 1, lag=0.2, max_waiting_bytes=128 << 10) as feed:
            time.sleep(2.5)  # past a deadline with the first pass's reader waiting for room
            seen: list[ReceivedEvents] = []
            deadline = time.monotonic() + 60
            while not seen or seen[-1].events[-1].kv.mod_revision < revisions[-1]:
                assert time.monotonic() < deadline, "the feed stopped before the last put"
                seen.extend(feed.take(1))
            assert not feed.ended, "a pass cut at its deadline ended the feed"
    assert [e.kv.mod_revision for r in seen for e in r.events] == revisions, "every revision once, in order"
    assert all(e.kv.value == value + str(e.kv.mod_revision - start - 1).encode() for r in seen for e in r.events)
    # Every revision existed before the first pass began: no response may say otherwise.
    assert all(r.written_after is None for r in seen)


def feed_ended_by_pausing(cluster: EtcdCluster, pki: Pki, command: float) -> tuple[float, EtcdUnavailable]:
    """Follow one member in passes, pause it: how long the feed took to end, and its error."""
    paused: EtcdMember = cluster.members[0]
    with connect([paused.client_url], tls(pki), dial=1, command=command) as client:
        first = client.put("/unanswered/k", b"1")
        with client.follow(first, lag=0.2) as feed:
            assert [e.kv.mod_revision for r in feed.take(30) for e in r.events] == [first]
            paused.pause()
            try:
                started = time.monotonic()
                with pytest.raises(EtcdUnavailable) as ended:
                    while True:  # the next passes get no answer
                        assert time.monotonic() - started < 30, "the feed never ended"
                        feed.take(0.1)
                took = time.monotonic() - started
                assert feed.ended
            finally:
                paused.resume()
    paused.wait_healthy()
    return took, ended.value


def test_a_lagging_feed_ends_with_an_error_when_a_pass_gets_no_answer(cluster: EtcdCluster, pki: Pki) -> None:
    took, _ = feed_ended_by_pausing(cluster, pki, command=0.5)
    assert took < 10, "the feed waited on past its deadline"


def test_a_pass_a_member_does_not_confirm_ends_the_feed_within_the_command_timeout(
        cluster: EtcdCluster, pki: Pki) -> None:
    # Soak: a member SIGSTOPped under capture's feed held it 30 s (a pass's whole deadline,
    # three command timeouts, kept for reading a backlog) while the other members took writes:
    # capture's RPO and every --to-time in those 30 s were that far behind. etcd confirms a
    # watch it can serve at once; one unconfirmed within the command timeout is given up.
    took, error = feed_ended_by_pausing(cluster, pki, command=2.0)
    assert took < 2.0 + 1.5, f"the feed waited {took:.1f}s on a member that did not answer"
    assert "did not confirm a watch within 2s" in str(error)


@pytest.mark.parametrize("lag", [0.0, 0.2], ids=["live", "lagging"])
def test_a_feed_from_a_compacted_revision_says_so(client: EtcdClient, lag: float) -> None:
    old = client.put("/compacted-feed/k", b"1")
    newer = client.put("/compacted-feed/k", b"2")
    client.compact(newer)
    with client.follow(old, lag=lag) as feed, pytest.raises(RevisionCompacted, match="compacted"):
        feed.take(30)


def test_a_lagging_feed_says_so_when_etcd_compacts_what_it_did_not_read_yet_between_passes(
        client: EtcdClient) -> None:
    first = client.put("/compacted-between/k", b"1")
    with client.follow(first, lag=1.0) as feed:
        assert [e.kv.mod_revision for r in feed.take(30) for e in r.events] == [first]
        # The pass that read it began after it was written; the next begins a second after.
        client.put("/compacted-between/k", b"2")
        client.compact(client.put("/compacted-between/k", b"3"))
        with pytest.raises(RevisionCompacted, match="compacted"):
            feed.take(30)
        assert feed.ended


def test_lease_grant_keepalive_and_revoke(client: EtcdClient) -> None:
    lease = client.lease_grant(30)
    client.put("/leased/k", b"v", lease=lease)
    assert 0 < client.lease_keepalive_once(lease) <= 30
    alive = client.lease_time_to_live(lease, keys=True)
    assert alive.granted_ttl == 30 and alive.keys == (b"/leased/k",)
    client.lease_revoke(lease)
    assert client.get("/leased/k") is None
    assert client.lease_keepalive_once(lease) <= 0
    assert client.lease_time_to_live(lease).ttl == -1


def test_a_healthy_cluster_has_no_alarms(client: EtcdClient) -> None:
    assert client.alarms() == []


def test_hash_kv_is_equal_on_every_member(client: EtcdClient, cluster: EtcdCluster) -> None:
    revision = client.put("/hashed", b"x")
    wait_applied(client, cluster.endpoints, revision)
    hashes = [client.hash_kv(e, revision) for e in cluster.endpoints]
    assert len({h.hash for h in hashes}) == 1
    assert {h.revision for h in hashes} == {revision}
    assert len({h.member_id for h in hashes}) == 3


def test_snapshot_stream_is_the_db_followed_by_its_sha256(
    client: EtcdClient, cluster: EtcdCluster, release: EtcdRelease, tmp_path: Path
) -> None:
    load_keys(client, numbered("/snap/", 300, 1024))
    # The leader applied every write before answering it; a follower applies them only after
    # it learns the new commit index, which under load can be well after load_keys returned.
    written = max(client.status(e).revision for e in cluster.endpoints)
    endpoint = cluster.endpoints[1]
    wait_applied(client, [endpoint], written)
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    for _ in range(5):
        # The snapshot's hash covers etcd's meta bucket (its consistent index), which moves with
        # any raft entry applied, e.g. the empty entry of an election; retry a pair that
        # straddled one, since then the two files rightly differ.
        applied = client.status(endpoint).raft_applied_index
        chunks = 0
        with ours.open("wb") as out:
            for chunk in client.snapshot(endpoint):
                out.write(chunk)
                chunks += 1
        theirs.unlink(missing_ok=True)
        cluster.members[1].etcdctl("snapshot", "save", str(theirs))
        if client.status(endpoint).raft_applied_index == applied:
            break
    data = ours.read_bytes()
    assert chunks > 1
    assert len(data) % 512 == 32
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]
    # Nothing was applied in between, so the stock tool must describe the same keyspace.
    assert snapshot_status(release, ours) == snapshot_status(release, theirs)
    assert snapshot_status(release, ours)["revision"] >= written
    assert snapshot_status(release, ours)["totalKey"] >= 300


def snapshot_status(release: EtcdRelease, path: Path) -> dict[str, int]:
    tool = release.etcdutl or release.etcdctl
    done = subprocess.run(
        [str(tool), "snapshot", "status", str(path), "-w", "json"],
        capture_output=True, text=True, check=True, env={"ETCDCTL_API": "3"},
    )
    status = json.loads(done.stdout)
    return {k: status[k] for k in ("hash", "revision", "totalKey")}


def test_read_at_a_compacted_revision_says_so(client: EtcdClient) -> None:
    old = client.put("/compacted/k", b"1")
    newer = client.put("/compacted/k", b"2")
    client.compact(newer)
    with pytest.raises(RevisionCompacted, match="compacted"):
        client.range("/compacted/k", revision=old)
    with pytest.raises(RevisionCompacted):
        client.watch("/compacted/k", start_revision=old).next_event(timeout=30)


def test_learner_can_be_added_and_removed(client: EtcdClient) -> None:
    peer_url = f"https://127.0.0.1:{free_port()}"
    deadline = time.monotonic() + 60
    while True:
        # etcd refuses membership changes ("unhealthy cluster") until every member has
        # been connected for a few seconds, which a freshly started cluster may not be.
        try:
            learner = client.member_add([peer_url], learner=True)
            break
        except EtcdUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        assert learner.is_learner and learner.name == "" and learner.id != 0
        assert learner.id in {m.id for m in client.member_list().members}
        with pytest.raises(OperationFailed):
            client.member_promote(learner.id)  # never started, so never caught up
    finally:
        left = client.member_remove(learner.id)
    assert learner.id not in {m.id for m in left} and len(left) == 3


def test_a_feed_started_again_while_its_member_hangs_follows_another_member(cluster: EtcdCluster, pki: Pki) -> None:
    # Soak probe: after a member hung under a feed, every follow() went back to it (its
    # connection still counted as proven by an earlier call) and waited for a confirmation
    # that never came, again and again; only other calls failing there moved the client on.
    with connect(cluster.endpoints, tls(pki), dial=1, command=1) as probe:
        # Followers: pausing raft's leader would hold every member's answers until a new one is elected.
        paused, other = [m for m in cluster.members
                         if (status := probe.status(m.client_url)).leader_id != status.member_id][:2]
    answering = other.client_url
    with connect([paused.client_url, answering], tls(pki), dial=1, command=1) as client:
        first = client.put("/rewatch/k", b"1")  # the hung member's connection is proven and preferred
        paused.pause()
        try:
            with client.follow(first, lag=0.2) as feed:
                assert feed.endpoint == answering
                assert [e.kv.mod_revision for r in feed.take(30) for e in r.events] == [first]
        finally:
            paused.resume()
    paused.wait_healthy()


def test_calls_fail_over_from_a_dead_endpoint(cluster: EtcdCluster, pki: Pki) -> None:
    dead = f"https://127.0.0.1:{free_port()}"
    with connect([dead, cluster.endpoints[2]], tls(pki), dial=1, command=3) as client:
        assert client.put("/failover/dead", b"x") > 0
        assert client.get("/failover/dead") is not None


def test_calls_fail_over_from_a_paused_member(cluster: EtcdCluster, pki: Pki) -> None:
    paused: EtcdMember = cluster.members[0]
    endpoints = [paused.client_url, cluster.endpoints[1], cluster.endpoints[2]]
    with connect(endpoints, tls(pki), dial=1, command=2) as client, \
            connect([paused.client_url], tls(pki), dial=1, command=2) as only_paused:
        assert client.get("/failover/probe") is None  # first endpoint now proven and preferred
        assert only_paused.get("/failover/probe") is None
        paused.pause()
        try:
            started = time.monotonic()
            listed = client.member_list()
            assert time.monotonic() - started < 5
            assert len(listed.members) == 3
            with connect([paused.client_url, cluster.endpoints[2]], tls(pki), dial=1, command=2) as fresh:
                assert len(fresh.member_list().members) == 3
            with pytest.raises(EtcdUnavailable, match="may or may not have been applied"):
                only_paused.put("/failover/lost", b"x")
        finally:
            paused.resume()
    paused.wait_healthy()


def test_unreachable_endpoints_raise_unavailable_quickly(pki: Pki) -> None:
    endpoints = [f"https://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    started = time.monotonic()
    with connect(endpoints, tls(pki), dial=1, command=2) as client, pytest.raises(EtcdUnavailable) as raised:
        client.member_list()
    assert time.monotonic() - started < 3
    assert endpoints[0] in str(raised.value) and endpoints[1] in str(raised.value)


def test_server_certificate_from_another_ca_is_an_auth_error(
    cluster: EtcdCluster, pki: Pki, other_pki: Pki
) -> None:
    started = time.monotonic()
    wrong_ca = TlsConfig(ca=other_pki.ca, cert=pki.client.cert, key=pki.client.key)
    with connect(cluster.endpoints, wrong_ca, dial=2) as client, pytest.raises(EtcdAuthError, match="--cacert"):
        client.status(cluster.endpoints[0])
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("which", ["foreign client certificate", "no client certificate"])
def test_client_certificate_etcd_does_not_trust_is_an_auth_error(
    cluster: EtcdCluster, pki: Pki, other_pki: Pki, which: str
) -> None:
    if which == "no client certificate":
        config = TlsConfig(ca=pki.ca)
    else:
        config = TlsConfig(ca=pki.ca, cert=other_pki.client.cert, key=other_pki.client.key)
    with connect(cluster.endpoints, config, dial=2) as client:
        with pytest.raises(EtcdAuthError, match="client certificate"):
            client.member_list()
        with pytest.raises(EtcdAuthError):
            list(client.snapshot(cluster.endpoints[0]))


def test_missing_tls_file_is_a_usage_error_naming_the_flag(pki: Pki, tmp_path: Path) -> None:
    config = TlsConfig(ca=tmp_path / "nope.crt", cert=pki.client.cert, key=pki.client.key)
    with pytest.raises(UsageError, match="--cacert"):
        EtcdClient(ConnectionSettings(("https://127.0.0.1:2379",), config))

"""The member a restore rebuilds: its name, cluster, peer URLs and data dir, checked before anything runs.

The fields mirror ``etcdutl snapshot restore``'s flags. Every member of a restored cluster
is restored from the same snapshot with the same ``--initial-cluster`` and
``--initial-cluster-token``; each has its own ``--name`` and ``--initial-advertise-peer-urls``,
which must be the URLs ``--initial-cluster`` lists for that name (etcd refuses to start
otherwise: "--initial-cluster has NAME=URL but missing from --initial-advertise-peer-urls").
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from lifeboat.config.rules import ETCD_URL_CREDENTIALS, holds_credentials
from lifeboat.errors import UsageError
from lifeboat.kube.static_pods import EtcdDiscovery
from lifeboat.restore.member_files import peer_url


@dataclass(frozen=True)
class ClusterMember:
    """One ``NAME=URL[,URL]`` entry of ``--initial-cluster``."""

    name: str
    peer_urls: tuple[str, ...]


def parse_initial_cluster(text: str) -> tuple[ClusterMember, ...]:
    """Parse ``m1=https://a:2380,m2=https://b:2380``; a name may repeat to list several URLs."""
    members: dict[str, list[str]] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if holds_credentials(part):
            raise UsageError(f"--initial-cluster: a member's peer URL {ETCD_URL_CREDENTIALS}")
        name, sep, url = part.partition("=")
        if not sep or not name or not url:
            raise UsageError(f"--initial-cluster entry {part!r} is not NAME=PEER_URL")
        printable(name, "--initial-cluster: a member name")
        members.setdefault(name, []).append(checked_peer_url(url, "--initial-cluster"))
    if not members:
        raise UsageError("--initial-cluster is empty; list every member as NAME=PEER_URL")
    listed = [url for urls in members.values() for url in urls]
    if len(set(listed)) != len(listed):  # etcd refuses to start on it: every member must be reachable on its own
        twice = sorted({url for url in listed if listed.count(url) > 1})
        raise UsageError(f"--initial-cluster lists peer URL {twice[0]} twice; each member needs its own")
    return tuple(ClusterMember(name, tuple(urls)) for name, urls in members.items())


def printable(value: str, what: str) -> str:
    """``value`` unless it holds a control character (a newline in a member name or token made
    'restore plan' print a line of its own into the commands operators paste into a shell)."""
    if not value.isprintable():
        raise UsageError(f"{what} {value!r} holds a control character (a newline, a tab); etcd names and "
                         "tokens are plain text")
    return value


def format_initial_cluster(members: tuple[ClusterMember, ...]) -> str:
    return ",".join(f"{m.name}={url}" for m in members for url in m.peer_urls)


def checked_peer_url(url: str, flag: str) -> str:
    """``url`` if etcd takes it as a peer URL (checked before anything is stopped)."""
    if holds_credentials(url):
        raise UsageError(f"{flag}: a peer URL {ETCD_URL_CREDENTIALS}")
    try:
        peer_url(url)
    except UsageError:
        raise UsageError(f"{flag}: {url!r} is not a peer URL like https://10.0.0.1:2380") from None
    return url


def new_cluster_token() -> str:
    """A fresh ``--initial-cluster-token``: a restored cluster must not share the old one's id."""
    return "lifeboat-" + secrets.token_hex(6)


@dataclass(frozen=True)
class RestoreTarget:
    """The member to rebuild on this node, validated."""

    name: str
    members: tuple[ClusterMember, ...]
    token: str
    peer_urls: tuple[str, ...]
    data_dir: Path

    @property
    def initial_cluster(self) -> str:
        return format_initial_cluster(self.members)

    @property
    def single_member(self) -> bool:
        return len(self.members) == 1


def make_target(
    *, name: str | None, initial_cluster: str | None, token: str | None,
    peer_urls: str | None, data_dir: Path | None, discovered: EtcdDiscovery | None,
) -> RestoreTarget:
    """Combine flags with what the node's etcd static pod says (flags win) and validate.

    Without ``token`` from either source, a fresh one is made: a restore always starts a
    new cluster, and etcd derives the cluster id from the token and the member URLs.
    """
    found = discovered
    name = name or (found.name if found else None)
    initial_cluster = initial_cluster or (found.initial_cluster if found else None)
    if peer_urls is None and found and found.initial_advertise_peer_urls:
        peer_urls = ",".join(found.initial_advertise_peer_urls)
    data_dir = data_dir or (found.data_dir if found else None)
    missing = [flag for flag, value in (
        ("--name", name), ("--initial-cluster", initial_cluster), ("--data-dir", data_dir),
    ) if not value]
    if missing:
        raise UsageError(
            f"no {', '.join(missing)} given and no etcd static pod under --root to take them from; "
            "pass them as for etcdutl snapshot restore"
        )
    assert name and initial_cluster and data_dir
    members = parse_initial_cluster(initial_cluster)
    listed = {m.name: m for m in members}
    if name not in listed:
        raise UsageError(
            f"--initial-cluster {initial_cluster!r} has no member named {name!r}; "
            "list this member as NAME=PEER_URL"
        )
    urls = tuple(checked_peer_url(u.strip(), "--initial-advertise-peer-urls")
                 for u in (peer_urls or "").split(",") if u.strip()) or listed[name].peer_urls
    if sorted(urls) != sorted(listed[name].peer_urls):
        raise UsageError(
            f"--initial-advertise-peer-urls {','.join(urls)} differs from what --initial-cluster "
            f"lists for {name} ({','.join(listed[name].peer_urls)}); make them the same"
        )
    if not data_dir.is_absolute():
        raise UsageError(f"--data-dir {data_dir} is not an absolute path")
    return RestoreTarget(name=name, members=members,
                         token=printable(token, "--initial-cluster-token") if token else new_cluster_token(),
                         peer_urls=urls, data_dir=data_dir)

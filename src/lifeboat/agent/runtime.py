"""Building a running agent from a validated config: etcd, repository, jobs, HTTP.

Where things come from: the config file (see :mod:`lifeboat.config`); the agent's id from
``$LIFEBOAT_AGENT_ID``, else ``$NODE_NAME`` (the DaemonSet sets it from the node name),
else the host name. Each agent's configuration hash leaves out what legitimately
differs between nodes (``agent.listen``, ``agent.log-format``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from datetime import timedelta

from lifeboat import __version__
from lifeboat.clock import Clock, SystemClock
from lifeboat.agent.capture import CaptureSupervisor
from lifeboat.agent.election import Election
from lifeboat.agent.http import AgentHttp
from lifeboat.agent.jobs import BackupJob
from lifeboat.agent.loop import Agent, AgentSettings, Jobs
from lifeboat.agent.metrics import AgentMetrics
from lifeboat.backup.pipeline import BackupOptions
from lifeboat.capture import Capture, CaptureStatus, capture_options
from lifeboat.capture.lock import CaptureLock
from lifeboat.retention.prune import apply_prune, plan_prune
from lifeboat.capture.packing import Packer, PackResult
from lifeboat.catalog.age_keys import load_identities
from lifeboat.catalog.manifest_cache import ManifestCache, default_cache_dir
from lifeboat.catalog.repository import BackupRepository
from lifeboat.config import LifeboatConfig, store_environ
from lifeboat.errors import NoRepository, UsageError
from lifeboat.etcd import ConnectionSettings, EtcdClient, TlsConfig
from lifeboat.kube.static_pods import etcd_endpoint_from_manifest
from lifeboat.store import open_store
from lifeboat.restore.native import native_or
from lifeboat.retention import parse_policies
from lifeboat.verify.drill import run_drill

log = logging.getLogger("lifeboat.agent")

DEFAULT_ENDPOINT = "127.0.0.1:2379"
# A backup runs inside one cycle, so the threshold must outlast the longest backup.
HEALTH_THRESHOLD = 600.0
MAX_INTERVAL = 5.0

Prune = Callable[[], int]
DrillRun = Callable[[threading.Event], bool]


def agent_id(environ: Mapping[str, str]) -> str:
    return environ.get("LIFEBOAT_AGENT_ID") or environ.get("NODE_NAME") or socket.gethostname()


def config_hash(config: LifeboatConfig) -> str:
    """sha256 of the effective configuration, less what differs between nodes by design."""
    data = config.model_dump(mode="json", by_alias=True)
    data.get("agent", {}).pop("listen", None)
    data.get("agent", {}).pop("log-format", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def etcd_connection(config: LifeboatConfig) -> ConnectionSettings:
    """The configured endpoints and TLS files, else the kubeadm etcd manifest, else 127.0.0.1:2379."""
    etcd = config.etcd
    endpoints = list(etcd.endpoints or [])
    ca, cert, key = etcd.cacert, etcd.cert, etcd.key
    if not endpoints and not (ca or cert or key):
        found = etcd_endpoint_from_manifest(config.root)
        if found is not None:
            endpoints = list(found.endpoints)
            ca, cert, key = found.ca, found.cert, found.key
    tls = TlsConfig(ca=ca, cert=cert, key=key) if (ca or cert or key) else None
    return ConnectionSettings.from_flags(",".join(endpoints) or DEFAULT_ENDPOINT, tls,
                                         etcd.dial_timeout, etcd.command_timeout)


def agent_settings(config: LifeboatConfig, environ: Mapping[str, str]) -> AgentSettings:
    if config.schedules.backup is None:
        raise UsageError("the agent needs schedules.backup (a cron expression) in its config file")
    if (problem := config.drills_cannot_decrypt()) is not None:  # refused now, not by every drill
        raise UsageError(problem)
    ttl = int(round(config.agent.lease_ttl))
    return AgentSettings(
        cluster=config.cluster, agent_id=agent_id(environ), backup_cron=config.schedules.backup,
        drill_cron=config.schedules.drill, lease_ttl=ttl, interval=min(MAX_INTERVAL, ttl / 3),
        health_threshold=HEALTH_THRESHOLD,
    ).check()


def backup_options(config: LifeboatConfig, endpoints: tuple[str, ...]) -> BackupOptions:
    return BackupOptions.from_config(config, endpoints)


class _Repository:
    """Opens the repository on each use, so one that is down at start-up is not fatal.

    It creates the repository only for a cluster that has never had a backup recorded
    (``recorded`` says whether one was): once one was, a repository that is not there is
    an unmounted disk or NFS share, or a moved bucket, and a new empty one in its place
    would hide that while the backups pile up where nobody looks.
    """

    def __init__(self, url: str, environ: Mapping[str, str], *, recorded: Callable[[], bool]) -> None:
        self.url = url
        self.environ = dict(environ)
        self.recorded = recorded
        self.cache_dir = default_cache_dir(self.environ)  # a relative $LIFEBOAT_CACHE_DIR stops the start

    def __call__(self) -> BackupRepository:
        store = open_store(self.url, self.environ)
        # Prune reads every manifest each cycle: those read in an earlier cycle come from the cache.
        cache = ManifestCache(self.cache_dir, store.url)
        try:
            return BackupRepository.open(store, cache=cache)
        except NoRepository:
            if self.recorded():
                raise NoRepository(
                    f"repository unavailable: no lifeboat repository at {store.url}, though this cluster's "
                    "backups were recorded; its mount (disk, NFS share) may be missing or it was moved; "
                    "the agent does not create a new one in its place"
                ) from None
        return BackupRepository.open(store, create=True, cache=cache)


def make_jobs(config: LifeboatConfig, etcd: EtcdClient, open_repo: _Repository,
              settings: AgentSettings, clock: Clock, election: Election) -> Jobs:
    job = BackupJob(etcd, open_repo, backup_options(config, etcd.settings.endpoints),
                    settings.agent_id, clock.now)

    prune = _prune_job(config, open_repo, clock) if config.retention is not None else None
    drill = _drill_job(config, open_repo) if config.schedules.drill is not None else None
    capture = (_capture_job(config, etcd, open_repo, settings, clock, election.still_leads)
               if config.capture.enabled else None)
    pack = _pack_job(config, open_repo, clock) if config.capture.enabled and config.capture.pack else None
    return Jobs(backup=job.run, prune=prune, drill=drill, capture=capture, pack=pack)


def _capture_job(config: LifeboatConfig, etcd: EtcdClient, open_repo: _Repository,
                 settings: AgentSettings, clock: Clock, leads: Callable[[], bool]) -> CaptureSupervisor:
    options = capture_options(config, etcd.settings.endpoints, settings.cluster)

    def run(stop: threading.Event, status: CaptureStatus) -> None:
        # Every write of capture is fenced by the leadership (an agent paused past its lease, a
        # partition, must not commit a segment the new leader's chain already holds) and by
        # the cluster's capture lock (a 'lifeboat capture' run by hand may hold it).
        lock = CaptureLock(etcd, settings.cluster, f"agent {settings.agent_id}", settings.lease_ttl, clock)
        try:
            Capture(etcd, open_repo(), options, stop=stop, clock=clock, status=status,
                    fence=lambda: leads() and lock.hold()).run()
        finally:
            lock.release()

    return CaptureSupervisor(run)


def _prune_job(config: LifeboatConfig, open_repo: _Repository, clock: Clock) -> Prune:
    """Prune the cluster's backups as ``lifeboat prune`` does, with the config's retention."""
    retention = config.retention
    assert retention is not None
    policies = parse_policies(retention.policies())  # a bad policy fails at start, not at the first prune
    grace = timedelta(seconds=retention.orphan_grace)

    def prune() -> int:
        repo = open_repo()
        plan = plan_prune(repo, policies, clock.now(), cluster=config.cluster,
                          min_redundancy=retention.min_redundancy, orphan_grace=grace)
        if not plan.incomplete_listed:
            log.warning("unfinished uploads not checked: %s", plan.incomplete_unlisted,
                        extra={"event": "prune_uploads_unchecked"})
        result = apply_prune(repo, plan)
        if result.incomplete_removed:
            log.info("removed %d unfinished upload(s) of killed backups", len(result.incomplete_removed),
                     extra={"event": "pruned_uploads"})
        return len(result.deleted)

    return prune


def _pack_job(config: LifeboatConfig, open_repo: _Repository,
              clock: Clock) -> Callable[[threading.Event], PackResult] | None:
    """Pack the cluster's small capture segments as ``lifeboat pack`` does (its defaults), or
    None, said once in the log, when encrypted segments could not be read."""
    recipients = config.encryption.recipients
    identities = load_identities([str(p) for p in config.encryption.identity_files])
    if recipients and not identities:
        log.warning("capture segments are not packed: they are encrypted to encryption.recipients and "
                    "encryption.identity-files names no key to read them (or set capture.pack: false)",
                    extra={"event": "pack_off"})
        return None

    def pack(stop: threading.Event) -> PackResult:
        return Packer.for_config(config, open_repo().chain_store, identities or None).run(config.cluster, clock.now(),
                                                                                         stop)

    return pack


def _drill_job(config: LifeboatConfig, open_repo: _Repository) -> DrillRun:
    identities = load_identities([str(p) for p in config.encryption.identity_files])

    def drill(stop: threading.Event) -> bool:
        repo = open_repo()
        manifest = repo.find("latest", config.cluster)
        # The data dir written as 'lifeboat restore' writes it by default.
        report = run_drill(repo, manifest, identities or None, tmp_dir=config.backup.tmp_dir,
                           choose_writer=lambda tool: native_or(tool, choice=None), stop=stop)
        failure = report.first_failure()
        if failure is not None:
            log.error("drill of backup %s failed: %s: %s", manifest.id, failure.name, failure.detail,
                      extra={"event": "drill_failed", "backup_id": manifest.id})
        return failure is None

    return drill


def run_agent(config: LifeboatConfig, environ: Mapping[str, str], stop: threading.Event,
              clock: Clock | None = None) -> int:
    """Run the agent until ``stop`` is set; returns the exit code."""
    clock = clock or SystemClock()
    settings = agent_settings(config, environ)
    if not config.repository.url:
        raise UsageError("the agent needs repository.url in its config file (or $LIFEBOAT_REPO)")
    metrics = AgentMetrics(settings.cluster, settings.agent_id, __version__, clock)
    with EtcdClient(etcd_connection(config), clock) as etcd:
        election = Election(etcd, settings.cluster, settings.agent_id, settings.lease_ttl,
                            config_hash(config), clock)
        open_repo = _Repository(config.repository.url, store_environ(config, environ),
                                recorded=lambda: election.last_tick("backup") is not None)
        jobs = make_jobs(config, etcd, open_repo, settings, clock, election)
        if jobs.capture is not None:
            metrics.capture(jobs.capture.status, lambda: jobs.capture is not None and jobs.capture.running)
        server = AgentHttp(config.agent.listen, metrics, clock, settings.health_threshold)
        log.info("serving /metrics, /healthz and /readyz on %s", server.url, extra={"event": "http_started", "url": server.url})
        try:
            return Agent(settings, election, jobs, metrics, clock, stop).run()
        finally:
            server.close()

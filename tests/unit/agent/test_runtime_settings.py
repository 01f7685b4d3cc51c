"""What the agent refuses at start rather than failing at every scheduled run."""

from __future__ import annotations

import threading
from pathlib import Path

import pyrage
import pytest

from lifeboat.agent.runtime import agent_settings
from lifeboat.config import load_config
from lifeboat.errors import UsageError
from tests.support.cli import Cli


def config_of(tmp_path: Path, encryption: str) -> Path:
    path = tmp_path / "lifeboat.yaml"
    path.write_text("schedules:\n  backup: '@hourly'\n  drill: '@daily'\n" + encryption)
    return path


def test_drills_of_encrypted_backups_without_an_identity_are_refused_at_start(tmp_path: Path) -> None:
    # The agent started, then every drill failed to decrypt the backup it fetched.
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    config = load_config(config_of(tmp_path, f"encryption:\n  recipients: [{recipient}]\n"))
    with pytest.raises(UsageError, match="encryption.identity-files"):
        agent_settings(config, {})


def test_drills_with_an_identity_or_of_plain_backups_are_accepted(tmp_path: Path) -> None:
    identity = tmp_path / "age.key"
    identity.write_text(str(pyrage.x25519.Identity.generate()) + "\n")
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    with_identity = f"encryption:\n  recipients: [{recipient}]\n  identity-files: [{identity}]\n"
    for encryption in (with_identity, ""):
        settings = agent_settings(load_config(config_of(tmp_path, encryption)), {})
        assert settings.drill_cron == "@daily"


def test_config_validate_refuses_what_the_agent_would_refuse(tmp_path: Path, cli: Cli) -> None:
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    path = config_of(tmp_path, f"encryption:\n  recipients: [{recipient}]\n")
    code, _out, err = cli("config", "validate", str(path))
    assert code == 3 and "encryption.identity-files" in err and err.count("\n") == 1, err


def capture_config(tmp_path: Path, encryption: str, capture: str = "") -> Path:
    path = tmp_path / "capture.yaml"
    path.write_text(f"cluster: prod\nrepository: {{url: 'file://{tmp_path / 'repo'}'}}\n"
                    f"schedules:\n  backup: '@hourly'\ncapture: {{enabled: true{capture}}}\n" + encryption)
    return path


def test_the_agent_packs_a_chain_of_small_segments_in_its_repository(tmp_path: Path) -> None:
    from datetime import timedelta

    from lifeboat.agent.runtime import _pack_job, _Repository
    from lifeboat.catalog.chains import ChainStore
    from lifeboat.clock import FakeClock
    from lifeboat.store import open_store
    from tests.unit.capture.test_packing import small_chain
    from tests.unit.catalog.capture_records import T0

    config = load_config(capture_config(tmp_path, ""))
    from lifeboat.catalog.repository import BackupRepository
    small_chain(BackupRepository.open(open_store(f"file://{tmp_path / 'repo'}"), create=True).store, 6)  # type: ignore[arg-type]
    job = _pack_job(config, _Repository(config.repository.url, {}, recorded=lambda: False),
                    FakeClock(T0 + timedelta(hours=1)))
    assert job is not None
    result = job(threading.Event())
    assert (result.packs, result.packed, result.refused) == (1, 5, [])
    (listing,) = ChainStore(open_store(f"file://{tmp_path / 'repo'}")).chains("prod")
    assert len(listing.segments) == 7


def test_the_agent_packs_after_the_waits_its_config_names(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    from lifeboat.agent.runtime import _pack_job, _Repository
    from lifeboat.catalog.repository import BackupRepository
    from lifeboat.clock import FakeClock
    from lifeboat.store import open_store
    from tests.unit.capture.test_packing import small_chain
    from tests.unit.catalog.capture_records import T0

    url = f"file://{tmp_path / 'repo'}"
    small_chain(BackupRepository.open(open_store(url), create=True).store, 6)  # type: ignore[arg-type]
    young = load_config(capture_config(tmp_path, "", ", pack-min-age: 2h"))
    assert young.capture.pack_min_age == 7200 and young.capture.pack_delete_after == 1800
    job = _pack_job(young, _Repository(url, {}, recorded=lambda: False), FakeClock(T0 + timedelta(hours=1)))
    assert job is not None and job(threading.Event()).packs == 0  # closed an hour ago: not yet
    at_once = load_config(capture_config(tmp_path, "", ", pack-min-age: 0, pack-delete-after: 0s"))
    job = _pack_job(at_once, _Repository(url, {}, recorded=lambda: False),
                    FakeClock(datetime.now(timezone.utc) + timedelta(seconds=1)))
    assert job is not None
    first, second = job(threading.Event()), job(threading.Event())
    assert (first.packs, first.packed, first.deleted) == (1, 5, 0)
    assert (second.packs, second.deleted) == (0, 5)  # the next pass, not waiting 30 minutes


def test_an_agent_that_cannot_read_encrypted_segments_does_not_pack_and_says_why(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from lifeboat.agent.runtime import _pack_job, _Repository
    from lifeboat.clock import FakeClock

    recipient = str(pyrage.x25519.Identity.generate().to_public())
    config = load_config(capture_config(tmp_path, f"encryption:\n  recipients: [{recipient}]\n"))
    assert _pack_job(config, _Repository(config.repository.url, {}, recorded=lambda: False), FakeClock()) is None
    assert "capture segments are not packed" in caplog.text and "identity-files" in caplog.text
    path = capture_config(tmp_path, "")
    path.write_text(path.read_text().replace("{enabled: true}", "{enabled: true, pack: false}"))
    assert not load_config(path).capture.pack


def test_the_agent_creates_its_repository_only_for_a_cluster_never_backed_up(tmp_path: Path) -> None:
    from lifeboat.agent.runtime import _Repository
    from lifeboat.errors import NoRepository

    repo = tmp_path / "repo"
    url = repo.as_uri()
    cache = {"LIFEBOAT_CACHE_DIR": str(tmp_path / "cache")}
    _Repository(url, cache, recorded=lambda: False)()  # a new cluster: its repository is created
    assert (repo / "lifeboat-repository.json").is_file()
    repo.rename(tmp_path / "repo.away")  # what an unmounted NFS share or disk looks like
    with pytest.raises(NoRepository, match=f"repository unavailable: no lifeboat repository at {url}, .*"
                                           "mount .* may be missing"):
        _Repository(url, cache, recorded=lambda: True)()
    assert not repo.exists()

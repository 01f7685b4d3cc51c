"""What the agent refuses at start rather than failing at every scheduled run."""

from __future__ import annotations

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

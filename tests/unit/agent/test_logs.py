"""The agent's log lines never show a private key, whatever a message quotes."""

from __future__ import annotations

import io
import json
import logging

import pyrage
import pytest

from lifeboat.agent.logs import configure_logging


@pytest.mark.parametrize("form", ["json", "text"])
def test_a_private_key_quoted_in_a_log_message_is_not_shown(
        form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = str(pyrage.x25519.Identity.generate())
    pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGx0aGlzaXNub3RhcmVhbGtleWF0YWxsMTIzNDU2Nzg5\n-----END PRIVATE KEY-----"
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        configure_logging(form)  # type: ignore[arg-type]
        logging.getLogger("lifeboat.agent").error("backup failed: cluster %r is invalid; key %s", secret, pem,
                                                  extra={"reason": f"got {secret}"})
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in before:
            root.addHandler(handler)
        root.setLevel(level)
    text = err.getvalue()
    assert "backup failed" in text and "not shown" in text
    assert secret[20:40] not in text and "MC4CAQAw" not in text
    if form == "json":
        line = json.loads(text)
        assert "not shown" in line["message"] and secret[20:40] not in line["reason"]

"""Where a driver finds the cluster's Ray token (:mod:`rad.runtime.ray_auth`), in Ray's own order.

Only the lookups and the refusals run in this process: joining (which switches the process
to token mode and refreshes Ray's config) would touch the session's own cluster. The connecting path runs in
tests/launch (test_launch_files: the refusal; test_cluster_e2e: a token cluster).
"""

from __future__ import annotations

import logging

import pytest

from rad.errors import ConfigError
from rad.runtime.ray_auth import require_token, token_source


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_token_sources_in_rays_order(no_token, monkeypatch):
    assert token_source() == ""
    default = no_token / ".ray" / "auth_token"
    default.parent.mkdir()
    default.write_text("from-default\n")
    default.chmod(0o600)
    assert token_source() == str(default)
    given = no_token / "elsewhere"
    given.write_text("from-path\nsecond line is ignored\n")
    given.chmod(0o600)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(given))
    assert token_source() == str(given)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert token_source() == "RAY_AUTH_TOKEN"


def test_a_token_path_without_a_token_is_an_error_not_a_fallback(no_token, monkeypatch):
    default = no_token / ".ray" / "auth_token"
    default.parent.mkdir()
    default.write_text("from-default")
    empty = no_token / "empty"
    empty.write_text("\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(empty))
    with pytest.raises(ConfigError, match=f"RAY_AUTH_TOKEN_PATH={empty}: the file is empty; set RAY_AUTH_TOKEN"):
        token_source()


def test_a_token_file_others_can_read_is_warned_about(no_token, caplog):
    default = no_token / ".ray" / "auth_token"
    default.parent.mkdir()
    default.write_text("t")
    default.chmod(0o644)  # what `ray get-auth-token --generate` leaves under a 022 umask
    with caplog.at_level(logging.WARNING, logger="rad.runtime"):
        token_source()
    assert f"chmod 600 {default}" in caplog.text


def test_joining_without_a_token_is_refused_unless_opted_out(no_token, monkeypatch, caplog):
    with pytest.raises(ConfigError, match="ray_address=10.0.0.1:6379: the cluster needs Ray's auth token"):
        require_token("10.0.0.1:6379")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    with pytest.raises(ConfigError, match="none was found"):
        require_token("auto")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with caplog.at_level(logging.WARNING, logger="rad.runtime"):
        require_token("auto")
    assert "RAY_AUTH_MODE=disabled: connecting to auto without a token" in caplog.text

"""Ray token authentication for a driver that joins a running cluster (:func:`require_token`).

rad's cluster templates (launch/) start every node with ``RAY_AUTH_MODE=token``: the GCS,
the dashboard / Jobs API and every node's services then refuse a caller without the
cluster's token. A driver finds the token where Ray's own loader
(``src/ray/rpc/authentication/authentication_token_loader.cc``) looks, in this order:

1. ``RAY_AUTH_TOKEN``: the token itself;
2. ``RAY_AUTH_TOKEN_PATH``: a file holding it on its first line (set but unreadable or
   empty is an error: Ray does not fall back, and does not expand ``~``);
3. ``~/.ray/auth_token``, where ``ray get-auth-token --generate`` writes it.

Ray enables token mode on a driver that connects to an explicit address only when
``RAY_AUTH_MODE=token`` is set; without it the driver sends no token and the cluster
refuses it. So an unset mode counts as ``token`` here (a
cluster is authenticated unless the user says otherwise) and a missing token is a
one-line error saying what to set; ``RAY_AUTH_MODE=disabled`` is the explicit opt-out for
a private network.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from rad.errors import ConfigError

log = logging.getLogger("rad.runtime")

MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
#: What to do about a missing token, appended to every error here.
HOW_TO = (f"set {TOKEN_ENV} to the cluster's token, or {TOKEN_PATH_ENV} to a file holding it, or put it in "
          f"~/.ray/auth_token (`ray get-auth-token` on the head prints it; launch/README.md); "
          f"{MODE_ENV}=disabled opts out on a private network")


def default_token_path() -> Path:
    """``~/.ray/auth_token``: where ``ray get-auth-token --generate`` writes and Ray reads last."""
    return Path.home() / ".ray" / "auth_token"


def auth_mode() -> str:
    """``token`` unless ``RAY_AUTH_MODE`` names another mode (``disabled``, ``k8s``)."""
    return os.environ.get(MODE_ENV, "").strip().lower() or "token"


def token_source() -> str:
    """Where Ray will read the token from (``RAY_AUTH_TOKEN``, or a file path); '' when there is none.

    Raises :class:`ConfigError` when ``RAY_AUTH_TOKEN_PATH`` names a file without a token.
    """
    if os.environ.get(TOKEN_ENV, "").strip():
        return TOKEN_ENV
    given = os.environ.get(TOKEN_PATH_ENV, "")
    path = Path(given) if given else default_token_path()
    try:
        with open(path) as f:
            found = f.readline().strip()
    except OSError as exc:
        if given:
            raise ConfigError(f"{TOKEN_PATH_ENV}={given}: cannot read the Ray token there "
                              f"({exc.strerror}); {HOW_TO}") from None
        return ""
    if not found:
        if given:
            raise ConfigError(f"{TOKEN_PATH_ENV}={given}: the file is empty; {HOW_TO}")
        return ""
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the Ray token file %s is open to other users; `chmod 600 %s`", path, path)
    return str(path)


def require_token(address: str, key: str = "ray_address") -> None:
    """Before connecting to the cluster at ``address`` (the config's ``key``): find the token or fail
    saying where to put it.

    With a token (and ``RAY_AUTH_MODE`` unset) this process and the processes it starts
    switch to token mode, so Ray sends it. ``RAY_AUTH_MODE=disabled`` skips the check.
    """
    mode = auth_mode()
    if mode != "token":
        if mode == "disabled":
            log.warning("%s=disabled: connecting to %s without a token (anyone who reaches the cluster's "
                        "ports can run code on it)", MODE_ENV, address)
        return
    if not token_source():
        raise ConfigError(f"{key}={address}: the cluster needs Ray's auth token and none was found; {HOW_TO}")
    if os.environ.get(MODE_ENV) != "token":
        _enable_token_mode()


def _enable_token_mode() -> None:
    """``RAY_AUTH_MODE=token`` for this process and its children, as ``ray.init`` does for a local cluster
    (it also refreshes Ray's cached config)."""
    from ray._private.authentication.authentication_token_setup import _enable_token_auth

    _enable_token_auth()

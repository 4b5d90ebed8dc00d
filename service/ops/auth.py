"""Who may see the ops surface: the `OPS_TOKEN`, as a Bearer header or a page login.

Without a configured token every ops path answers 404, so a deployment that forgot the
setting is closed rather than open. Tokens are compared in constant time, as bytes, so
neither the timing nor a non-ASCII header can tell an attacker anything.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

from flask import current_app, session

from ..config import Settings

SESSION_KEY: Final = "ops"
CSRF_KEY: Final = "csrf"
CSRF_FIELD: Final = "csrf_token"
# Distinguishes the derived cookie key from any other use of the token.
_SECRET_KEY_CONTEXT: Final = b"billing-webhooks ops session key v1"


def ops_token() -> str | None:
    """The configured ops token, or None when ops is switched off."""
    settings: Settings = current_app.config["SETTINGS"]
    return settings.ops_token


def token_matches(candidate: str | None, token: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    if candidate is None:
        return False
    return hmac.compare_digest(candidate.encode("utf-8", "replace"), token.encode("utf-8"))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def derive_secret_key(token: str) -> str:
    """A cookie-signing key derived from the ops token, for deployments without SECRET_KEY.

    Every gunicorn worker (and every machine) derives the same key from the same token, so a
    login made on one worker is accepted by the others; rotating the token logs everyone out.
    """
    return hmac.new(token.encode("utf-8"), _SECRET_KEY_CONTEXT, hashlib.sha256).hexdigest()


def session_fingerprint(token: str) -> str:
    """What the session stores instead of the token: changes when the token is rotated."""
    return hmac.new(token.encode("utf-8"), b"ops session", hashlib.sha256).hexdigest()[:32]


def logged_in() -> bool:
    """Whether the page session belongs to someone who gave the current token."""
    token = ops_token()
    stored = session.get(SESSION_KEY)
    if token is None or not isinstance(stored, str):
        return False
    return hmac.compare_digest(stored.encode(), session_fingerprint(token).encode())


def log_in(token: str) -> None:
    """Start a page session: a fresh session (no fixation) with its own CSRF token."""
    session.clear()
    session[SESSION_KEY] = session_fingerprint(token)
    session[CSRF_KEY] = secrets.token_urlsafe(32)
    session.permanent = True


def csrf_token() -> str:
    """The session's CSRF token, created on first use."""
    value = session.get(CSRF_KEY)
    if not isinstance(value, str):
        value = secrets.token_urlsafe(32)
        session[CSRF_KEY] = value
    return value


def csrf_valid(submitted: str | None) -> bool:
    """A form's CSRF token matches the session's (constant time)."""
    expected = session.get(CSRF_KEY)
    if not isinstance(expected, str) or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode("utf-8", "replace"))

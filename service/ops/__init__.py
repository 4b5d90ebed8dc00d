"""The ops surface: a read-only web page, its JSON API and the `webhooks` CLI commands.

All three answer the same question, "what plan and quota does this account have, why,
and since when?", from the same read functions (`accounts`, `events`) and replay failed
events through the same code path as a delivery (`replay`). The web surfaces exist only
while `OPS_TOKEN` is configured; without it every ops path answers 404.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask

from ..config import Settings
from .auth import derive_secret_key


def register_ops(app: Flask) -> None:
    """Mount `/ops` and `/ops/api`, make the page's session cookie safe, add the CLI groups."""
    from . import api, pages
    from .session import OpsSessionInterface

    settings: Settings = app.config["SETTINGS"]
    if not app.config.get("SECRET_KEY") and settings.ops_token:
        app.config["SECRET_KEY"] = derive_secret_key(settings.ops_token)
    app.session_interface = OpsSessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="ops_session",
        SESSION_COOKIE_PATH="/ops",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
    )
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    # The same commands under `flask --app service ...` as under `webhooks ...`.
    from .commands import register_commands

    register_commands(app.cli)

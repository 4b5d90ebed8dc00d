"""The uptime-monitor blueprint: `/health` (readiness) and `/health/live` (liveness).

Answers are `application/health+json` after draft-inadarei-api-health-check, compact, and
starting with the top-level status, so a keyword monitor can match `{"status":"pass"`.
`pass` and `warn` answer 200, `fail` 503; never cached by anything in between.

`/health` reads its result from the process's `HealthMonitor` (time-boxed, single
flight, shared for HEALTH_CACHE_SECONDS); `/health/live` never touches the database, so
a Kubernetes liveness probe does not restart a healthy process while the database is out.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import metadata
from typing import Any, Final

from flask import Blueprint, Response, current_app
from flask.blueprints import BlueprintSetupState

from ..config import Settings
from . import checks
from .checks import Status
from .monitor import HealthMonitor, make_health_engine

bp = Blueprint("health", __name__)

HEALTH_JSON: Final = "application/health+json"
HTTP_STATUS: Final[dict[Status, int]] = {checks.PASS: 200, checks.WARN: 200, checks.FAIL: 503}
SERVICE_ID: Final = "billing-webhooks"
DESCRIPTION: Final = "Stripe billing-webhook receiver: plan tiers and API quotas"


@bp.record_once
def _build_monitor(state: BlueprintSetupState) -> None:
    """Give the application its health monitor when the blueprint is registered."""
    app = state.app
    settings: Settings = app.config["SETTINGS"]
    engine = make_health_engine(app.extensions["engine"].url, settings)
    app.extensions["health"] = HealthMonitor(engine, settings)


@bp.route("/health", methods=["GET", "HEAD"])
def health() -> Response:
    """Can this process take webhooks? The database, the backlog and the event flow decide."""
    monitor: HealthMonitor = current_app.extensions["health"]
    report = monitor.report()
    document = _service_fields(report.status)
    notes = checks.outputs(report.checks)
    if notes:
        document["output"] = "; ".join(notes)
    document["checks"] = report.checks
    return _health_response(document, HTTP_STATUS[report.status])


@bp.route("/health/live", methods=["GET", "HEAD"])
def live() -> Response:
    """The process serves requests; the database is deliberately not consulted."""
    return _health_response(_service_fields(checks.PASS), 200)


def _service_fields(status: Status) -> dict[str, Any]:
    settings: Settings = current_app.config["SETTINGS"]
    version = _version()
    return {
        "status": status,
        "version": version,
        "releaseId": settings.release_id or version,
        "serviceId": SERVICE_ID,
        "description": DESCRIPTION,
    }


@cache
def _version() -> str:
    try:
        return metadata.version("billing-webhooks")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def _health_response(document: dict[str, Any], code: int) -> Response:
    body = json.dumps(document, separators=(",", ":"))
    response = Response(body, status=code, mimetype=HEALTH_JSON)
    response.headers["Cache-Control"] = "no-store"
    return response

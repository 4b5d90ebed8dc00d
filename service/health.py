"""The uptime-monitor blueprint: `/health` (database round trip) and `/health/live`."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, json
from sqlalchemy import text

bp = Blueprint("health", __name__)

HEALTH_JSON = "application/health+json"


def _health_response(document: dict[str, object], code: int) -> Response:
    response = Response(json.dumps(document), status=code, mimetype=HEALTH_JSON)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/health/live", methods=["GET", "HEAD"])
def live() -> Response:
    """The process serves requests; the database is not consulted."""
    return _health_response({"status": "pass"}, 200)


@bp.route("/health", methods=["GET", "HEAD"])
def health() -> Response:
    """Can the service take webhooks? A database round trip decides."""
    started = time.perf_counter()
    try:
        with current_app.extensions["engine"].connect() as connection:
            connection.execute(text("SELECT 1"))
        status = "pass"
    except Exception:
        status = "fail"
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    document: dict[str, object] = {
        "status": status,
        "checks": {
            "postgresql:responseTime": [
                {
                    "componentType": "datastore",
                    "observedValue": elapsed_ms,
                    "observedUnit": "ms",
                    "status": status,
                }
            ]
        },
    }
    return _health_response(document, 200 if status == "pass" else 503)

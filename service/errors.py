"""JSON errors in one shape, `{"error": ..., "message": ...}`, for every HTTP error."""

from __future__ import annotations

import json

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse


def error_response(error: str, message: str, status: int) -> tuple[Response, int]:
    """A JSON error body with its status code."""
    return jsonify(error=error, message=message), status


# Where werkzeug's name for a status is not the one this service documents.
_ERROR_NAMES = {413: "payload_too_large"}


def _http_error(exc: HTTPException) -> WerkzeugResponse:
    code = exc.code or 500
    name = _ERROR_NAMES.get(code) or (exc.name or "error").lower().replace(" ", "_")
    response = exc.get_response()
    response.set_data(json.dumps({"error": name, "message": exc.description}))
    response.content_type = "application/json"
    response.status_code = code
    return response


def register_error_handlers(app: Flask) -> None:
    """Answer HTTP errors (404, 405, 413 ...) with JSON instead of HTML."""
    app.register_error_handler(HTTPException, _http_error)

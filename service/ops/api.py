"""`/ops/api/...`: the ops JSON API, Bearer `OPS_TOKEN`, documents exactly as SPEC.

Every status code of the API is decided here: 404 for every path while no token is
configured, 401 for a missing or wrong token, 400 for a bad filter or cursor, 404 for an
unknown id. Errors are `{"error", "message"}` like the rest of the service.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response as WerkzeugResponse

from ..db import transaction
from ..errors import error_response
from ..stripe_webhooks.processing import ProcessingContext
from . import accounts, events
from .auth import bearer_token, ops_token, token_matches
from .headers import add_security_headers
from .pagination import InvalidQuery, parse_limit
from .replay import EventNotFound, replay

log = logging.getLogger(__name__)

bp = Blueprint("ops_api", __name__, url_prefix="/ops/api")


@bp.before_request
def require_token() -> tuple[Response, int] | None:
    token = ops_token()
    if token is None:
        abort(404)
    if not token_matches(bearer_token(request.headers.get("Authorization")), token):
        log.info("ops.api.unauthorized", extra={"path": request.path})
        response, code = error_response(
            "unauthorized", "Send the ops token as 'Authorization: Bearer <OPS_TOKEN>'", 401
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="ops"'
        return response, code
    return None


@bp.after_request
def headers(response: WerkzeugResponse) -> WerkzeugResponse:
    return add_security_headers(response)


@bp.errorhandler(InvalidQuery)
def invalid_query(exc: InvalidQuery) -> tuple[Response, int]:
    return error_response(exc.error, exc.message, 400)


@bp.errorhandler(SQLAlchemyError)
def database_unavailable(exc: SQLAlchemyError) -> tuple[Response, int]:
    log.error("ops.api.database_failed", extra={"error": type(exc).__name__})
    response, code = error_response(
        "database_unavailable", "The database did not answer; retry later", 503
    )
    response.headers["Retry-After"] = "5"
    return response, code


def _not_found(what: str, identifier: str) -> tuple[Response, int]:
    return error_response("not_found", f"No {what} {identifier!r}", 404)


def _engine() -> Any:
    return current_app.extensions["engine"]


def _arg(name: str) -> str | None:
    value = request.args.get(name, "").strip()
    return value or None


@bp.get("/accounts/<account_id>")
def account(account_id: str) -> Response | tuple[Response, int]:
    with transaction(_engine()) as session:
        found = accounts.get_account(session, account_id)
        if found is None:
            return _not_found("account", account_id)
        return jsonify(accounts.account_document(session, found))


@bp.get("/customers/<customer_id>")
def customer(customer_id: str) -> Response | tuple[Response, int]:
    with transaction(_engine()) as session:
        found = accounts.account_for_customer(session, customer_id)
        if found is None:
            return _not_found("account linked to customer", customer_id)
        return jsonify(accounts.account_document(session, found))


@bp.get("/accounts")
def account_list() -> Response:
    filters = accounts.AccountFilter(plan=_arg("plan"), status=_arg("status"))
    limit = parse_limit(_arg("limit"))
    with transaction(_engine()) as session:
        rows, next_cursor = accounts.list_accounts(
            session, filters, limit=limit, cursor=_arg("cursor")
        )
        return jsonify(
            accounts=[accounts.account_summary(a) for a in rows], next_cursor=next_cursor
        )


@bp.get("/accounts/<account_id>/history")
def account_history(account_id: str) -> Response | tuple[Response, int]:
    with transaction(_engine()) as session:
        if accounts.get_account(session, account_id) is None:
            return _not_found("account", account_id)
        return jsonify(accounts.history_document(session, account_id))


@bp.get("/events")
def event_list() -> Response:
    filters = events.EventFilter(
        status=_arg("status"),
        type=_arg("type"),
        customer_id=_arg("customer"),
        account_id=_arg("account"),
    )
    limit = parse_limit(_arg("limit"))
    with transaction(_engine()) as session:
        rows, next_cursor = events.list_events(session, filters, limit=limit, cursor=_arg("cursor"))
        return jsonify(events=[events.event_document(e) for e in rows], next_cursor=next_cursor)


@bp.get("/events/<event_id>")
def event(event_id: str) -> Response | tuple[Response, int]:
    with transaction(_engine()) as session:
        found = events.get_event(session, event_id)
        if found is None:
            return _not_found("event", event_id)
        return jsonify(events.event_document(found))


@bp.post("/events/<event_id>/replay")
def replay_event(event_id: str) -> Response | tuple[Response, int]:
    context: ProcessingContext = current_app.extensions["processing_context"]
    try:
        with transaction(_engine()) as session:
            result = replay(session, event_id, context)
    except EventNotFound:
        return _not_found("event", event_id)
    log.info(
        "ops.event.replayed",
        extra={"event_id": event_id, "status": result.status_after, "via": "api"},
    )
    with transaction(_engine()) as session:
        found = events.get_event(session, event_id)
        assert found is not None
        return jsonify(events.event_document(found))

"""`/ops`: the server-rendered ops page for people (no JavaScript).

Log in with the ops token, search an account by id, Stripe customer id or email, read its
plan, quota and where the quota comes from, subscriptions, invoices, event timeline and
audit trail, and replay failed events. Everything is read-only except the replay button,
a POST carrying the session's CSRF token. The login sets a signed HttpOnly SameSite=Strict
cookie; the token itself is never stored in it.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import session as flask_session
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response as WerkzeugResponse

from ..db import transaction
from ..errors import error_response
from ..stripe_webhooks.models import EVENT_STATUSES
from ..stripe_webhooks.processing import ProcessingContext
from . import accounts, events
from .auth import CSRF_FIELD, csrf_token, csrf_valid, log_in, logged_in, ops_token, token_matches
from .headers import add_security_headers
from .pagination import InvalidQuery
from .replay import EventNotFound, replay

log = logging.getLogger(__name__)

bp = Blueprint(
    "ops_pages",
    __name__,
    url_prefix="/ops",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

# Reachable without a session (but, like every ops path, only while a token is set).
_PUBLIC_ENDPOINTS = frozenset({"ops_pages.login", "ops_pages.static"})
PAGE_SIZE = 50


@bp.before_request
def require_login() -> WerkzeugResponse | None:
    if ops_token() is None:
        abort(404)
    if request.endpoint in _PUBLIC_ENDPOINTS:
        return None
    if not logged_in():
        return redirect(url_for("ops_pages.login", next=request.full_path.rstrip("?")))
    if request.method == "POST" and not csrf_valid(request.form.get(CSRF_FIELD)):
        abort(400, "The form expired or did not come from this page; reload it and try again")
    return None


@bp.after_request
def headers(response: WerkzeugResponse) -> WerkzeugResponse:
    return add_security_headers(response)


@bp.errorhandler(SQLAlchemyError)
def database_unavailable(exc: SQLAlchemyError) -> tuple[Response, int]:
    log.error("ops.page.database_failed", extra={"error": type(exc).__name__})
    return error_response("database_unavailable", "The database did not answer; retry later", 503)


@bp.app_template_global()
def csrf_field() -> str:
    return csrf_token()


@bp.app_template_filter("when")
def when(value: str | None) -> str:
    """An ISO timestamp shortened for reading: date and time to the second, in UTC."""
    if not value:
        return "—"
    return value.replace("T", " ")[:19] + " UTC" if value.endswith("+00:00") else value


@bp.app_template_filter("money")
def money(amount: int | None, currency: str | None) -> str:
    if amount is None:
        return "—"
    return f"{amount / 100:,.2f} {(currency or '').upper()}".strip()


def _engine() -> Any:
    return current_app.extensions["engine"]


def _safe_next(target: str | None) -> str:
    """Only redirect back into the ops page after login (no open redirect)."""
    if target and target.startswith("/ops") and not urlsplit(target).netloc:
        return target
    return url_for("ops_pages.index")


@bp.route("/login", methods=["GET", "POST"])
def login() -> WerkzeugResponse | str:
    error = None
    if request.method == "POST":
        token = ops_token()
        assert token is not None
        if not csrf_valid(request.form.get(CSRF_FIELD)):
            error = "The form expired; try again."
        elif token_matches(request.form.get("token"), token):
            log_in(token)
            log.info("ops.page.login", extra={"remote_addr": request.remote_addr})
            return redirect(_safe_next(request.args.get("next")))
        else:
            log.info("ops.page.login_failed", extra={"remote_addr": request.remote_addr})
            error = "That token is not the ops token."
    status = 401 if error else 200
    return Response(render_template("ops/login.html", error=error), status=status)


@bp.post("/logout")
def logout() -> WerkzeugResponse:
    flask_session.clear()
    return redirect(url_for("ops_pages.login"))


@bp.get("", strict_slashes=False)
def index() -> str:
    with transaction(_engine()) as session:
        failed, _ = events.list_events(
            session, events.EventFilter(), limit=10, statuses=events.FAILED_STATUSES
        )
        return render_template(
            "ops/index.html",
            failed=[events.event_document(e) for e in failed],
        )


@bp.get("/search")
def search() -> WerkzeugResponse | str:
    term = request.args.get("q", "").strip()
    if not term:
        return redirect(url_for("ops_pages.index"))
    with transaction(_engine()) as session:
        found = accounts.search_accounts(session, term)
        if len(found) == 1:
            return redirect(url_for("ops_pages.account", account_id=found[0].id))
        event = events.get_event(session, term) if term.startswith("evt_") else None
        if event is not None and not found:
            return redirect(url_for("ops_pages.event", event_id=event.id))
        return render_template(
            "ops/search.html",
            term=term,
            results=[accounts.account_summary(a) for a in found],
        )


def _not_found(what: str, identifier: str) -> Response:
    """The page saying no `what` is known by `identifier`, with status 404."""
    return Response(
        render_template("ops/not_found.html", what=what, identifier=identifier), status=404
    )


@bp.get("/accounts/<account_id>")
def account(account_id: str) -> WerkzeugResponse | str:
    with transaction(_engine()) as session:
        found = accounts.get_account(session, account_id)
        if found is None:
            return _not_found("account", account_id)
        document = accounts.account_document(session, found)
        history = accounts.history_document(session, account_id)["entries"]
        invoices = [accounts.invoice_document(i) for i in accounts.invoices_of(session, found.id)]
        timeline = [events.event_document(e) for e in accounts.recent_events_of(session, found)]
        return render_template(
            "ops/account.html",
            account=document,
            history=history,
            invoices=invoices,
            timeline=timeline,
        )


@bp.get("/customers/<customer_id>")
def customer(customer_id: str) -> WerkzeugResponse | str:
    with transaction(_engine()) as session:
        found = accounts.account_for_customer(session, customer_id)
        if found is None:
            return _not_found("account linked to customer", customer_id)
        return redirect(url_for("ops_pages.account", account_id=found.id))


@bp.get("/events")
def event_list() -> WerkzeugResponse | str:
    status = request.args.get("status", "failed").strip() or "failed"
    statuses = events.FAILED_STATUSES if status == "failed" else None
    try:
        filters = events.EventFilter(status=None if statuses else status)
        with transaction(_engine()) as session:
            rows, next_cursor = events.list_events(
                session,
                filters,
                limit=PAGE_SIZE,
                cursor=request.args.get("cursor") or None,
                statuses=statuses,
            )
            documents = [events.event_document(e) for e in rows]
    except InvalidQuery as exc:
        abort(400, exc.message)
    return render_template(
        "ops/events.html",
        status=status,
        statuses=EVENT_STATUSES,
        events=documents,
        next_cursor=next_cursor,
    )


@bp.get("/events/<event_id>")
def event(event_id: str) -> WerkzeugResponse | str:
    with transaction(_engine()) as session:
        found = events.get_event(session, event_id)
        if found is None:
            return _not_found("event", event_id)
        return render_template(
            "ops/event.html", event=events.event_document(found), payload=found.payload
        )


@bp.post("/events/<event_id>/replay")
def replay_event(event_id: str) -> WerkzeugResponse:
    context: ProcessingContext = current_app.extensions["processing_context"]
    try:
        with transaction(_engine()) as session:
            result = replay(session, event_id, context)
    except EventNotFound:
        abort(404, f"No event {event_id!r}")
    log.info(
        "ops.event.replayed",
        extra={"event_id": event_id, "status": result.status_after, "via": "page"},
    )
    category = "ok" if result.status_after in ("processed", "ignored") else "problem"
    message = f"Replayed {event_id}: {result.status_before} → {result.status_after}"
    if result.error and category == "problem":
        message += f" ({result.error})"
    flash(message, category)
    return redirect(_safe_next(request.form.get("back")))

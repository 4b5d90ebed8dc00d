"""The Stripe blueprint: `POST /webhooks/stripe` verifies, stores, then applies.

Every status code of the endpoint is decided in this module: 400 for a bad signature or
payload, 413 for an oversized body, 503 when the database cannot store the event (so
Stripe retries), and 200 only once the event is durably committed.
"""

from __future__ import annotations

import json
import logging
import time

from flask import Blueprint, Response, current_app, request
from sqlalchemy import Engine
from sqlalchemy.exc import DataError, SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge

from ..db import transaction
from ..errors import error_response
from ..metrics import SIGNATURE_FAILURES, observe_webhook
from . import models
from .direct import DatabaseUnavailable, receive_direct
from .payload import Event, PayloadError, parse_event
from .processing import (
    HandlerFailed,
    ProcessingContext,
    expected_outcome,
    log_outcome,
    receive,
)
from .signature import SignatureError, verify

log = logging.getLogger(__name__)

bp = Blueprint("stripe_webhooks", __name__)

# Stripe retries on its own schedule; the header tells other callers when to come back.
RETRY_AFTER_SECONDS = "30"
_READ_SIZE = 64 * 1024


def _read_body(limit: int) -> bytes | None:
    """The raw body, or `None` as soon as it is known to exceed `limit` bytes.

    A declared `Content-Length` over the limit is refused before a byte is read. A
    chunked body is read until it ends or passes the limit, never further, in a loop
    because one read may return less than asked for.
    """
    declared = request.content_length
    if declared is not None:
        # werkzeug reads exactly the declared length (a shorter body is a client error).
        return None if declared > limit else request.get_data(cache=False)
    # werkzeug's own maximum cannot tell a body of exactly `limit` bytes from a longer
    # one it cut off; allowing one byte more lets this loop see the difference.
    request.max_content_length = limit + 1
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := request.stream.read(min(_READ_SIZE, limit + 1 - size)):
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
    except RequestEntityTooLarge:
        return None
    return b"".join(chunks)


@bp.post("/webhooks/stripe")
def receive_stripe_event() -> tuple[Response, int]:
    """Verify the signature over the raw body before anything touches the database."""
    settings = current_app.config["SETTINGS"]
    limit = settings.max_webhook_bytes
    body = _read_body(limit)
    if body is None:
        return error_response("payload_too_large", f"The body exceeds {limit} bytes", 413)

    try:
        verify(
            body,
            request.headers.get("Stripe-Signature"),
            settings.stripe_webhook_secrets,
            settings.stripe_webhook_tolerance,
            time.time(),
        )
    except SignatureError as exc:
        SIGNATURE_FAILURES.inc()
        log.info("stripe.signature.invalid", extra={"reason": str(exc)})
        return error_response("invalid_signature", str(exc), 400)

    try:
        event, raw_json = parse_event(body)
    except PayloadError as exc:
        log.info("stripe.payload.invalid", extra={"reason": str(exc)})
        return error_response("invalid_payload", str(exc), 400)

    context: ProcessingContext = current_app.extensions["processing_context"]
    started = time.perf_counter()
    engine = current_app.extensions["engine"]
    try:
        direct = None
        if expected_outcome(event, context)[0] == models.PROCESSED:
            direct = receive_direct(engine, event, raw_json, context)
        if direct is not None:
            status = direct.status
            log_outcome(event, status, direct.account_id, None)
        else:
            status = _receive_full(engine, event, raw_json, context)
    except DataError as exc:
        # PostgreSQL refused the JSON (\u0000, a lone surrogate, NaN): the body is at fault.
        # Only the SQLSTATE and the first line: PostgreSQL's full message quotes the JSON.
        diag = getattr(exc.orig, "diag", None)
        log.info(
            "stripe.payload.invalid",
            extra={
                "event_id": event.id,
                "sqlstate": getattr(exc.orig, "sqlstate", None),
                "reason": getattr(diag, "message_primary", None) or type(exc.orig).__name__,
            },
        )
        return error_response(
            "invalid_payload",
            "The event's JSON cannot be stored (a null character, lone surrogate or NaN)",
            400,
        )
    except (SQLAlchemyError, DatabaseUnavailable) as exc:
        log.error(
            "stripe.event.store_failed",
            extra={"event_id": event.id, "event_type": event.type, "error": type(exc).__name__},
        )
        response, code = error_response(
            "database_unavailable", "The event could not be stored; retry later", 503
        )
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        return response, code
    observe_webhook(event.type, status, time.perf_counter() - started)
    answered = models.FAILED if status == models.DEAD else status
    # Built by hand: the answer is sent for every event, and jsonify costs several times this.
    answer = json.dumps(
        {"received": True, "id": event.id, "status": answered}, separators=(",", ":")
    )
    return Response(answer, 200, mimetype="application/json"), 200


def _receive_full(engine: Engine, event: Event, raw_json: str, context: ProcessingContext) -> str:
    """Store and apply the event through the handler table (`processing.receive`)."""
    try:
        # Without a savepoint around the handler: two round trips fewer per event.
        with transaction(engine) as session:
            return receive(session, event, raw_json, context, isolate=False)
    except HandlerFailed:
        # Rolled back; again with the handler isolated, so the failure is recorded.
        with transaction(engine) as session:
            return receive(session, event, raw_json, context)

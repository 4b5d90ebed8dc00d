"""Store a verified event, then apply it through the handler table, in one transaction.

Used by the webhook view, the worker, replays and catch-up alike, so an event takes the
same path however it arrives. The caller owns the transaction; nothing here commits.

Lock order, the same everywhere so concurrent deliveries cannot deadlock:
1. the customer's advisory lock (`lock_customer`), which serialises every event of one
   Stripe customer across processes and machines;
2. then the rows of the event and its object (`INSERT ... ON CONFLICT`,
   `SELECT ... FOR UPDATE` on events, subscriptions, invoices);
3. then, when a plan may change, the account's advisory lock and its row
   (`billing_recompute_account`), which ops take first and alone.
`stripe_receive_event` (the direct path) keeps the same order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from ..config import Settings
from . import models
from .handlers import HANDLERS, Outcome
from .payload import Event, event_from_payload

log = logging.getLogger(__name__)

DUPLICATE = "duplicate"
# Longest wait between two retries of a failed event, whatever the attempt count.
MAX_BACKOFF = timedelta(hours=6)


def backoff_seconds(settings: Settings, attempt: int) -> float:
    """How long to wait after attempt number `attempt` (1, 2, ...) before the next one.

    Doubles with each attempt from WORKER_BACKOFF_SECONDS, at most MAX_BACKOFF. The delay
    is added to the database's clock, the same clock the worker asks "is it due?" by, so
    machines whose clocks disagree still share one schedule.
    """
    delay = settings.worker_backoff_seconds * 2.0 ** max(attempt - 1, 0)
    return min(delay, MAX_BACKOFF.total_seconds())


# Takes the customer's advisory lock (a no-op without a customer: the function is strict)
# and stores the event in one round trip. The lock is taken before the row is inserted,
# so the lock order of the module docstring holds. The row records the outcome expected
# (`processed`, or `ignored` for a type without handler), counted as attempt 1, so the
# common case needs no second write; `apply` corrects it when the handler says otherwise.
_INSERT_EVENT = text(
    """
    WITH customer_lock AS (SELECT pg_advisory_xact_lock(hashtextextended(:lock_key, 0)))
    INSERT INTO stripe_events (id, type, created, livemode, api_version, payload, customer_id,
                               status, attempts, last_error, processed_at, account_id)
    SELECT :id, :type, to_timestamp(:created), :livemode, :api_version,
           CAST(:payload AS jsonb), :customer_id, :status, 1, :last_error, now(),
           (SELECT account_id FROM stripe_customers WHERE id = :customer_id)
      FROM customer_lock
    ON CONFLICT (id) DO NOTHING
    RETURNING account_id
    """
)
_LOCK_EXISTING = text("SELECT status FROM stripe_events WHERE id = :id FOR UPDATE")
_LOCK_CUSTOMER = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
_RECORD_OUTCOME = text(
    """
    UPDATE stripe_events
       SET status = :status, attempts = attempts + :increment, last_error = :last_error,
           next_attempt_at = now() + make_interval(secs => CAST(:retry_in AS float8)),
           account_id = COALESCE(:account_id, account_id),
           processed_at = CASE WHEN :status IN ('processed', 'ignored') THEN now()
                               WHEN :increment = 0 THEN NULL  -- stored as processed just now
                               ELSE processed_at END
     WHERE id = :id
    RETURNING attempts
    """
)
_WAITING_FOR_CUSTOMER = text(
    """
    SELECT id, payload FROM stripe_events
     WHERE customer_id = :customer_id AND status = 'pending'
     ORDER BY created, id
       FOR UPDATE
    """
)


class HandlerFailed(Exception):
    """A handler raised while running without a savepoint (`receive(isolate=False)`).

    The transaction holds its partial changes, so the caller rolls it back and receives
    the event again with `isolate=True`, which records the failure.
    """


@dataclass(frozen=True)
class ProcessingContext:
    """What handlers may consult besides the session: settings and the Stripe API."""

    settings: Settings
    stripe_api: Any = None


def lock_customer(session: Session, customer_id: str | None) -> None:
    """Hold the customer's advisory lock until the transaction ends (see module docstring)."""
    if customer_id:
        session.execute(_LOCK_CUSTOMER, {"key": f"stripe-customer:{customer_id}"})


def receive(
    session: Session,
    event: Event,
    raw_json: str,
    context: ProcessingContext,
    *,
    isolate: bool = True,
) -> str:
    """Store a delivered event durably and apply it; return the status to answer Stripe.

    A redelivery of an event already settled answers `duplicate`; one stored but not yet
    applied (pending, failed, dead) gets another attempt. `isolate=False` runs the
    handler without a savepoint (two round trips fewer) and raises `HandlerFailed` when
    it fails: the webhook view then rolls back and receives the event again, isolated.
    """
    customer_id = event.customer_id
    expected = expected_outcome(event, context)
    inserted = session.execute(
        _INSERT_EVENT,
        {
            "lock_key": f"stripe-customer:{customer_id}" if customer_id else None,
            "id": event.id,
            "type": event.type,
            "created": event.created,
            "livemode": event.livemode,
            "api_version": event.api_version,
            "payload": raw_json,
            "customer_id": customer_id,
            "status": expected[0],
            "last_error": expected[1],
        },
    ).first()
    if inserted is None:
        status = session.execute(_LOCK_EXISTING, {"id": event.id}).scalar_one()
        if status in models.SETTLED_STATUSES:
            log.info(
                "stripe.event.duplicate",
                extra={"event_id": event.id, "event_type": event.type, "status": status},
            )
            return DUPLICATE
        return apply(session, event, context, isolate=isolate)
    recorded = (expected[0], inserted.account_id)
    return apply(session, event, context, recorded=recorded, isolate=isolate)


def expected_outcome(event: Event, context: ProcessingContext) -> tuple[str, str | None]:
    """The status (and error) an event gets unless its handler says otherwise."""
    wanted_mode = context.settings.livemode
    if wanted_mode is not None and event.livemode != wanted_mode:
        return models.IGNORED, (
            f"livemode={str(event.livemode).lower()} does not match STRIPE_LIVEMODE"
        )
    if event.type not in HANDLERS:
        return models.IGNORED, None
    return models.PROCESSED, None


def apply(
    session: Session,
    event: Event,
    context: ProcessingContext,
    *,
    recorded: tuple[str, str | None] | None = None,
    isolate: bool = True,
) -> str:
    """Apply a stored (and locked) event through its handler and record the outcome.

    A handler error fails only this event: its changes are rolled back to a savepoint and
    the event is kept as `failed` for the worker to retry, or `dead` after the last
    attempt. Losing the database is not the event's fault and propagates to the caller.
    `recorded` is the (status, account id) the row already holds for this attempt, when
    `receive` stored it with the expected outcome: the row is only written again when the
    outcome differs. `isolate=False`: see `receive`.
    """
    status, error = expected_outcome(event, context)
    handler = HANDLERS.get(event.type)
    if status == models.IGNORED or handler is None:
        outcome = Outcome(models.IGNORED)
    else:
        try:
            if isolate:
                with session.begin_nested():
                    outcome = handler(session, event, context)
            else:
                outcome = handler(session, event, context)
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:
            if not isolate:
                raise HandlerFailed(event.id) from exc
            outcome = Outcome(models.FAILED)
            error = f"{type(exc).__name__}: {exc}"
    if (
        recorded is not None
        and outcome.status == recorded[0]
        and outcome.account_id in (None, recorded[1])
    ):
        status = outcome.status
        log_outcome(event, status, outcome.account_id or recorded[1], error)
    else:
        status = record_outcome(
            session, event, outcome, error, context.settings, counted=recorded is not None
        )
    if outcome.linked_customer_id:
        apply_waiting_events(session, outcome.linked_customer_id, context)
    return status


def apply_waiting_events(session: Session, customer_id: str, context: ProcessingContext) -> None:
    """Apply the events that were waiting for this customer to be linked, oldest first."""
    rows = session.execute(_WAITING_FOR_CUSTOMER, {"customer_id": customer_id}).all()
    for row in rows:
        apply(session, event_from_payload(row.payload), context)


def record_outcome(
    session: Session,
    event: Event,
    outcome: Outcome,
    error: str | None,
    settings: Settings,
    *,
    counted: bool = False,
) -> str:
    """Write the outcome of this attempt; `counted`: the row already counts the attempt."""
    status = outcome.status
    retry_in: float | None = None
    increment = 0 if counted else 1
    if status == models.FAILED:
        # The attempt being recorded is number `attempt`; the backoff doubles each time.
        attempt = (
            session.execute(
                text("SELECT attempts FROM stripe_events WHERE id = :id"), {"id": event.id}
            ).scalar_one()
            + increment
        )
        if attempt >= settings.worker_max_attempts:
            status = models.DEAD
        else:
            retry_in = backoff_seconds(settings, attempt)
    session.execute(
        _RECORD_OUTCOME,
        {
            "id": event.id,
            "status": status,
            "increment": increment,
            "last_error": error,
            "retry_in": retry_in,
            "account_id": outcome.account_id,
        },
    )
    log_outcome(event, status, outcome.account_id, error)
    return status


def log_outcome(event: Event, status: str, account_id: str | None, error: str | None) -> None:
    level = logging.WARNING if status in (models.FAILED, models.DEAD) else logging.INFO
    log.log(
        level,
        f"stripe.event.{status}",
        extra={
            "event_id": event.id,
            "event_type": event.type,
            "status": status,
            "account_id": account_id,
            "error": error,
        },
    )

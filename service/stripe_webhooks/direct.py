"""The direct path: store an event and apply it in one statement, one round trip.

Most deliveries are a checkout that links a customer to an account, or a subscription,
invoice or customer snapshot of a customer already linked. For those the webhook
computes the snapshot record in Python (the same `*_record` functions the full path
uses) and calls the SQL function `stripe_receive_event` (migration 0004) on the
connection this thread keeps for it, in autocommit mode (`held_connection.py`). The
function takes the customer's lock, stores the event as `processed` and calls the same
`billing_*` functions as the full path, so both paths apply one set of rules; a
statement is its own transaction, so the event and its effects commit together or not
at all.

Everything else takes the full path (`processing.receive`): event types without a
direct kind, an event whose snapshot does not parse or whose price maps to no plan (the
full path records the failure), and the cases the function refuses with SQLSTATE WH001
after rolling back: a customer not linked yet, an event stored earlier but not settled,
a same-second tie that needs Stripe's answer, a checkout whose link conflicts with an
existing one or has events waiting for it.

Why not through the session: SQLAlchemy's session and transaction scope cost several
times the statement itself, and BEGIN and COMMIT are round trips of their own
(`make bench` measures both paths).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from sqlalchemy import Engine

from ..billing.accounts import Cause
from ..billing.plans import load_catalogue
from ..billing.snapshots import (
    parse_checkout_session,
    parse_customer,
    parse_invoice,
    parse_subscription,
)
from ..billing.stripe_objects import (
    customer_record,
    invoice_record,
    snapshot_json,
    subscription_record,
)
from ..db_watchdog import watchdog_of
from .held_connection import held_connections
from .payload import Event
from .processing import ProcessingContext

log = logging.getLogger(__name__)

# SQLSTATE raised by `stripe_receive_event` for an event the full path must take.
FULL_PATH_SQLSTATE: Final = "WH001"
# SQLSTATEs of a session the server ended (admin_shutdown 57P01, crash_shutdown 57P02 ...).
SESSION_ENDED_SQLSTATE_CLASS: Final = "57P"

RECEIVE_SQL = (
    "SELECT status, account_id"
    " FROM stripe_receive_event(%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s::jsonb, %s)"
)


class DatabaseUnavailable(Exception):
    """The database could not be reached or did not answer in time (the view answers 503)."""


class SessionEnded(DatabaseUnavailable):
    """The server ended the connection's session (SQLSTATE class 57P: it shut down, or
    terminated that backend). Whatever the statement had done was rolled back, or had
    committed before the session ended; either way it may be sent again."""


@dataclass(frozen=True)
class Received:
    """What the direct path did: `processed` or `duplicate`, and the event's account."""

    status: str
    account_id: str | None


RecordBuilder = Callable[[Event, ProcessingContext, Engine], dict[str, Any]]


def _subscription(deleted: bool) -> RecordBuilder:
    def build(event: Event, context: ProcessingContext, engine: Engine) -> dict[str, Any]:
        snap = parse_subscription(event.data_object)
        return subscription_record(
            snap,
            plan_price_map=context.settings.plan_price_map,
            catalogue=load_catalogue(engine),
            deleted=snap.ended(deleted),
            created=event.created,
            cause=Cause.event(event.id),
        )

    return build


def _invoice(event: Event, context: ProcessingContext, engine: Engine) -> dict[str, Any]:
    snap = parse_invoice(event.data_object)
    return invoice_record(snap, created=event.created, cause=Cause.event(event.id))


def _customer(deleted: bool) -> RecordBuilder:
    def build(event: Event, context: ProcessingContext, engine: Engine) -> dict[str, Any]:
        snap = parse_customer(event.data_object, deleted_event=deleted)
        return customer_record(snap, created=event.created, cause=Cause.event(event.id))

    return build


def _checkout(event: Event, context: ProcessingContext, engine: Engine) -> dict[str, Any]:
    snap = parse_checkout_session(event.data_object)
    if not snap.customer_id or not snap.account_id or snap.customer_id != event.customer_id:
        # Nothing to link (the handler ignores the event): the full path records that.
        raise ValueError("The checkout session links nothing")
    return {"customer_id": snap.customer_id, "account_id": snap.account_id, "email": snap.email}


# Event type -> (snapshot kind for `stripe_receive_event`, how to build its record). Each
# entry does what the type's handler in `handlers.HANDLERS` does for a linked customer;
# tests/stripe_webhooks/test_direct.py holds every entry to its handler.
DIRECT_KINDS: Final[dict[str, tuple[str, RecordBuilder]]] = {
    "checkout.session.completed": ("checkout", _checkout),
    "checkout.session.async_payment_succeeded": ("checkout", _checkout),
    "checkout.session.async_payment_failed": ("checkout", _checkout),
    "customer.subscription.created": ("subscription", _subscription(False)),
    "customer.subscription.updated": ("subscription", _subscription(False)),
    "customer.subscription.deleted": ("subscription", _subscription(True)),
    "customer.subscription.paused": ("subscription", _subscription(False)),
    "customer.subscription.resumed": ("subscription", _subscription(False)),
    "customer.subscription.trial_will_end": ("subscription", _subscription(False)),
    "invoice.paid": ("invoice", _invoice),
    "invoice.payment_succeeded": ("invoice", _invoice),
    "invoice.payment_failed": ("invoice", _invoice),
    "invoice.payment_action_required": ("invoice", _invoice),
    "customer.updated": ("customer", _customer(False)),
    "customer.deleted": ("customer", _customer(True)),
}


def receive_direct(
    engine: Engine, event: Event, raw_json: str, context: ProcessingContext
) -> Received | None:
    """Store and apply `event` in one statement, or None when the full path must take it.

    Raises `DatabaseUnavailable` when the database cannot be reached or does not answer
    within DATABASE_TIMEOUT (plus the watchdog's grace), so the view answers 503.
    """
    arguments = receive_arguments(engine, event, raw_json, context)
    if arguments is None:
        return None
    row = _execute(engine, arguments)
    return None if row is None else Received(row[0], row[1])


def receive_arguments(
    engine: Engine, event: Event, raw_json: str, context: ProcessingContext
) -> tuple[Any, ...] | None:
    """The arguments of `stripe_receive_event` (RECEIVE_SQL) for `event`, or None when
    its type has no direct kind or its snapshot cannot be built (the full path takes it).
    """
    direct = DIRECT_KINDS.get(event.type)
    if direct is None:
        return None
    kind, build = direct
    try:
        record = build(event, context, engine)
    except Exception:  # the full path records why the event failed
        return None
    return (
        event.id,
        event.type,
        event.created,
        event.livemode,
        event.api_version,
        event.customer_id,
        raw_json,
        kind,
        snapshot_json(record),
        context.stripe_api is not None,
    )


def _execute(engine: Engine, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Run `stripe_receive_event` on this thread's held connection, in autocommit, watched.

    A connection the server ended while it was kept (a restart, `pg_terminate_backend`)
    is replaced and the statement sent once more: the function is idempotent, so a first
    attempt that did commit only turns the answer into `duplicate`. Any other connection
    error (a timeout, a connection refused) answers 503 at once.
    """
    try:
        return _execute_once(engine, params)
    except SessionEnded:
        return _execute_once(engine, params)  # a second SessionEnded answers 503


def _execute_once(engine: Engine, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
    watchdog = watchdog_of(engine)
    held = held_connections(engine)
    try:
        connection = held.get()
    except Exception as exc:
        raise DatabaseUnavailable(type(exc).__name__) from exc
    watchdog.arm(connection)
    try:
        row: tuple[Any, ...] | None = connection.execute(RECEIVE_SQL, params).fetchone()
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        held.discard(exc)
        if (exc.sqlstate or "").startswith(SESSION_ENDED_SQLSTATE_CLASS):
            raise SessionEnded(exc.sqlstate) from exc
        raise DatabaseUnavailable(type(exc).__name__) from exc
    except psycopg.Error as exc:
        if exc.sqlstate != FULL_PATH_SQLSTATE:
            # Not a connection problem: the full path gives this event its usual answer
            # (400 for a payload PostgreSQL refuses, a recorded failure otherwise).
            log.info(
                "stripe.event.direct_refused",
                extra={"sqlstate": exc.sqlstate, "error": type(exc).__name__},
            )
        return None
    finally:
        watchdog.disarm(connection)
    return row

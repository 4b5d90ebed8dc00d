"""The background worker: retries failed events and applies pending ones that can now be.

Two kinds of stored event are due:
- `failed` whose `next_attempt_at` has come (the backoff is set by
  `processing._record_outcome`, which also turns an event `dead` after
  `WORKER_MAX_ATTEMPTS` attempts);
- `pending` whose customer has since been linked to an account (normally the link's own
  transaction applies them; this catches links made any other way).

Several workers on several machines may run at once; the database decides who does what.
Each candidate gets its own transaction and is claimed in the same lock order as a
webhook delivery (see `processing`): first the customer's advisory lock, then the event
row with `FOR UPDATE SKIP LOCKED`, re-checking that the event is still due. The
customer lock is only *tried*: when another worker or a delivery holds it, the candidate
is skipped for now instead of queueing every worker behind one busy customer.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Final

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from ..db import transaction
from . import models
from .handlers import Outcome
from .payload import PayloadError, event_from_payload

# The same recording (attempts, backoff, dead) as every other attempt: one formula.
from .processing import ProcessingContext, apply, backoff_seconds, record_outcome

log = logging.getLogger(__name__)

# Must build the same key as `processing.lock_customer`; a test holds one against the other.
CUSTOMER_LOCK_KEY: Final = "stripe-customer:{customer_id}"
# How long a drain waits before looking again at candidates whose customer was busy.
BUSY_RETRY_SECONDS: Final = 0.05

_DUE = """
    (e.status = 'failed' AND e.next_attempt_at <= now())
    OR (e.status = 'pending'
        AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= now())
        AND EXISTS (SELECT 1 FROM stripe_customers c WHERE c.id = e.customer_id))
"""
_CANDIDATES = text(
    f"""
    SELECT e.id, e.customer_id FROM stripe_events e
     WHERE ({_DUE})
       AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= :as_of)
       AND NOT (e.id = ANY(:exclude))
     ORDER BY COALESCE(e.next_attempt_at, e.received_at), e.created, e.id
     LIMIT :limit
    """  # noqa: S608  # the interpolated text is the constant _DUE, never input
)
_TRY_LOCK_CUSTOMER = text("SELECT pg_try_advisory_xact_lock(hashtextextended(:key, 0))")
_CLAIM = text(
    f"""
    SELECT e.id, e.status, e.payload FROM stripe_events e
     WHERE e.id = :id AND ({_DUE})
       FOR UPDATE OF e SKIP LOCKED
    """  # noqa: S608  # the interpolated text is the constant _DUE, never input
)
_DEFER_PENDING = text(
    """
    UPDATE stripe_events SET next_attempt_at = now() + make_interval(secs => :retry_in)
     WHERE id = :id AND status = 'pending'
    """
)
_MARK_UNREADABLE = text(
    """
    UPDATE stripe_events
       SET status = 'dead', attempts = attempts + 1, last_error = :error, next_attempt_at = NULL
     WHERE id = :id
    """
)


class Attempt(Enum):
    """What became of one candidate."""

    DONE = "done"  # claimed and applied; its new status is recorded
    BUSY = "busy"  # its customer is locked by another worker or a delivery
    GONE = "gone"  # no longer due, or its row is claimed elsewhere


@dataclass
class DrainResult:
    """Counts of one drain, by the status each attempted event ended in."""

    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def attempted(self) -> int:
        return sum(self.statuses.values())

    def add(self, status: str) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


class Worker:
    """Drains due events; `run` keeps draining until `stop` is set."""

    def __init__(
        self,
        engine: Engine,
        context: ProcessingContext,
        *,
        batch: int = 100,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.engine = engine
        self.context = context
        self.batch = batch
        self.stop = stop or threading.Event()
        self._sleep = sleep

    def drain(self) -> DrainResult:
        """Attempt every event due now, once each, then return (`webhooks worker --once`).

        Only events due when the drain starts are picked. An attempt that fails again
        sets a later `next_attempt_at` (by the database's clock, like the cut-off), so
        even a zero backoff cannot keep a drain going. Candidates whose customer is busy,
        or whose row another worker holds, are passed over for the rest of the round and
        looked at again after a short pause, once nothing else is left.
        """
        result = DrainResult()
        as_of = self._database_now()
        passed_over: list[str] = []
        while not self.stop.is_set():
            candidates = self._candidates(as_of, passed_over)
            if not candidates:
                if not passed_over:
                    break
                # Only events held by someone else are left: they finish soon, and the
                # next look finds them settled (or due again, and free).
                passed_over.clear()
                self._sleep(BUSY_RETRY_SECONDS)
                continue
            for event_id, customer_id in candidates:
                if self.stop.is_set():
                    break
                outcome, status = self.attempt(event_id, customer_id)
                if outcome is not Attempt.DONE:
                    passed_over.append(event_id)
                elif status is not None:
                    result.add(status)
        return result

    def run(self) -> None:
        """Drain, wait `WORKER_POLL_SECONDS`, repeat until stopped (SIGTERM)."""
        poll = self.context.settings.worker_poll_seconds
        log.info("stripe.worker.started", extra={"batch": self.batch, "poll_seconds": poll})
        while not self.stop.is_set():
            try:
                result = self.drain()
            except SQLAlchemyError as exc:
                # The database went away or a statement timed out: nothing was half
                # applied (each event has its own transaction); try again next poll.
                log.error("stripe.worker.drain_failed", extra={"error": _describe(exc)})
            else:
                if result.attempted:
                    log.info("stripe.worker.drained", extra=dict(result.statuses))
            self.stop.wait(poll)
        log.info("stripe.worker.stopped")

    def attempt(self, event_id: str, customer_id: str | None) -> tuple[Attempt, str | None]:
        """Claim one candidate and apply it in its own transaction.

        A statement of the attempt that fails in the database (a statement or lock
        timeout) rolls the attempt back; it is then recorded as a failed attempt, with
        backoff and `dead` as for a handler error, so one such event can neither stop
        the drain of the events behind it nor be retried silently forever. A lost
        connection is the database's trouble, not the event's, and propagates.
        """
        try:
            return self._apply(event_id, customer_id)
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            return self._record_error(event_id, customer_id, exc)

    def _apply(self, event_id: str, customer_id: str | None) -> tuple[Attempt, str | None]:
        with transaction(self.engine) as session:
            if customer_id and not _try_lock_customer(session, customer_id):
                return Attempt.BUSY, None
            row = session.execute(_CLAIM, {"id": event_id}).first()
            if row is None:
                return Attempt.GONE, None
            try:
                event = event_from_payload(row.payload)
            except PayloadError as exc:
                # Stored payloads were validated on receipt; one that no longer parses
                # cannot get better by retrying.
                error = f"stored payload unreadable: {exc}"
                session.execute(_MARK_UNREADABLE, {"id": event_id, "error": error})
                log.error("stripe.event.dead", extra={"event_id": event_id, "error": error})
                return Attempt.DONE, models.DEAD
            log.info(
                "stripe.worker.attempt",
                extra={"event_id": event.id, "event_type": event.type, "was": row.status},
            )
            status = apply(session, event, self.context)
            if status == models.PENDING:
                _defer_pending(session, event_id, self.context)
            return Attempt.DONE, status

    def _record_error(
        self, event_id: str, customer_id: str | None, exc: DBAPIError
    ) -> tuple[Attempt, str | None]:
        error = _describe(exc)
        with transaction(self.engine) as session:
            if customer_id and not _try_lock_customer(session, customer_id):
                return Attempt.BUSY, None
            row = session.execute(_CLAIM, {"id": event_id}).first()
            if row is None:
                return Attempt.GONE, None
            event = event_from_payload(row.payload)
            status = record_outcome(
                session, event, Outcome(models.FAILED), error, self.context.settings
            )
            return Attempt.DONE, status

    def _database_now(self) -> datetime:
        """The database's clock, by which retries are scheduled and found due."""
        with self.engine.connect() as connection:
            now: datetime = connection.execute(text("SELECT clock_timestamp()")).scalar_one()
        return now

    def _candidates(self, as_of: datetime, exclude: list[str]) -> list[tuple[str, str | None]]:
        with Session(self.engine) as session:
            rows = session.execute(
                _CANDIDATES, {"as_of": as_of, "exclude": exclude, "limit": self.batch}
            ).all()
        return [(row.id, row.customer_id) for row in rows]


def _describe(exc: SQLAlchemyError) -> str:
    """The driver's message without SQLAlchemy's statement and parameters, which may
    carry customer data from a payload."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {str(exc.orig).strip()}"
    return type(exc).__name__


def _try_lock_customer(session: Session, customer_id: str) -> bool:
    """Take the customer's advisory lock if it is free (held until the transaction ends)."""
    key = CUSTOMER_LOCK_KEY.format(customer_id=customer_id)
    return bool(session.execute(_TRY_LOCK_CUSTOMER, {"key": key}).scalar_one())


def _defer_pending(session: Session, event_id: str, context: ProcessingContext) -> None:
    """A linked customer's event that still waits is looked at again after a backoff.

    Without this a handler that keeps answering `pending` would be re-applied on every
    poll. A pending event never turns `dead`: it waits for as long as it must.
    """
    attempts = session.execute(
        text("SELECT attempts FROM stripe_events WHERE id = :id"), {"id": event_id}
    ).scalar_one()
    retry_in = backoff_seconds(context.settings, attempts)
    session.execute(_DEFER_PENDING, {"id": event_id, "retry_in": retry_in})


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set `stop` on SIGTERM or SIGINT: the event in hand is finished, then the worker exits.

    Platforms send SIGTERM before stopping a process; finishing the current (short)
    transaction means no event is left half applied or claimed by a dead worker.
    """

    def request_stop(signum: int, frame: object) -> None:
        log.info("stripe.worker.stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def summary(result: DrainResult) -> str:
    """One line for people: `3 events attempted (processed 2, failed 1)`."""
    if not result.attempted:
        return "no events due"
    counts = ", ".join(f"{status} {n}" for status, n in sorted(result.statuses.items()))
    noun = "event" if result.attempted == 1 else "events"
    return f"{result.attempted} {noun} attempted ({counts})"

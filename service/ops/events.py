"""Reading stored Stripe events for ops: one event's document, and filtered lists.

The document shape is the SPEC's `GET /ops/api/events/<evt_id>`; the CLI and the page
show the same fields, so all three answer with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from ..stripe_webhooks import models
from ..stripe_webhooks.models import StripeEvent
from .pagination import InvalidQuery, decode_cursor, encode_cursor

# What ops mean by "failed events": failing now, or given up on by the worker.
FAILED_STATUSES = (models.FAILED, models.DEAD)


def iso(value: datetime | None) -> str | None:
    """A timestamp as ISO 8601 in UTC, the way every ops document writes time.

    Converted explicitly: psycopg hands timestamps back in the server's TimeZone setting.
    """
    return value.astimezone(UTC).isoformat() if value is not None else None


def event_document(event: StripeEvent) -> dict[str, Any]:
    """The JSON document of one stored event."""
    return {
        "id": event.id,
        "type": event.type,
        "status": event.status,
        "created": iso(event.created),
        "received_at": iso(event.received_at),
        "attempts": event.attempts,
        "last_error": event.last_error,
        "customer_id": event.customer_id,
        "account_id": event.account_id,
    }


def get_event(session: Session, event_id: str) -> StripeEvent | None:
    return session.get(StripeEvent, event_id)


@dataclass(frozen=True)
class EventFilter:
    """Filters of an events list; empty ones are not applied."""

    status: str | None = None
    type: str | None = None
    customer_id: str | None = None
    account_id: str | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in models.EVENT_STATUSES:
            allowed = ", ".join(models.EVENT_STATUSES)
            raise InvalidQuery(
                "invalid_parameter", f"status must be one of {allowed}, got {self.status!r}"
            )


def list_events(
    session: Session,
    filters: EventFilter,
    *,
    limit: int,
    cursor: str | None = None,
    statuses: tuple[str, ...] | None = None,
) -> tuple[list[StripeEvent], str | None]:
    """A page of events, newest received first, and the cursor of the next page (or None)."""
    query = select(StripeEvent)
    if filters.status:
        query = query.where(StripeEvent.status == filters.status)
    if statuses:
        query = query.where(StripeEvent.status.in_(statuses))
    if filters.type:
        query = query.where(StripeEvent.type == filters.type)
    if filters.customer_id:
        query = query.where(StripeEvent.customer_id == filters.customer_id)
    if filters.account_id:
        query = query.where(StripeEvent.account_id == filters.account_id)
    if cursor:
        received_at, event_id = decode_cursor(cursor, 2)
        try:
            after = datetime.fromisoformat(received_at)
        except ValueError:
            raise InvalidQuery(
                "invalid_cursor", "The cursor is not one this API returned"
            ) from None
        query = query.where(tuple_(StripeEvent.received_at, StripeEvent.id) < (after, event_id))
    query = query.order_by(StripeEvent.received_at.desc(), StripeEvent.id.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last.received_at.isoformat(), last.id)

"""Processing a stored event again, on the same code path a delivery takes.

A replay takes the customer's advisory lock, then the event's row lock, rebuilds the event
from its stored payload and hands it to `processing.apply`, exactly like a redelivery. Handlers
set state from snapshots, so replaying an event that was already applied changes nothing.

A dry run does the same inside a savepoint, reads the account before and after, and rolls
back: what it shows is what a real replay would do, computed by the real code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ..metrics import observe_replay
from ..stripe_webhooks.models import StripeEvent
from ..stripe_webhooks.payload import event_from_payload
from ..stripe_webhooks.processing import ProcessingContext, apply, lock_customer
from .accounts import account_document, get_account
from .events import FAILED_STATUSES

_LOCK_EVENT = text("SELECT status FROM stripe_events WHERE id = :id FOR UPDATE")


class EventNotFound(LookupError):
    """No stored event has this id."""


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did (or, in a dry run, would do) to the event and its account."""

    event_id: str
    status_before: str
    status_after: str
    account_id: str | None
    error: str | None
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)


def replay(session: Session, event_id: str, context: ProcessingContext) -> ReplayResult:
    """Apply a stored event again; the caller's transaction keeps the result."""
    result = _replay(session, event_id, context)
    observe_replay(result.status_after)
    return result


def dry_run(session: Session, event_id: str, context: ProcessingContext) -> ReplayResult:
    """What `replay` would change, computed in a savepoint that is rolled back."""
    with session.begin_nested() as savepoint:
        result = _replay(session, event_id, context, diff=True)
        savepoint.rollback()
    return result


def failed_event_ids(session: Session, limit: int | None = None) -> list[str]:
    """Failed and dead events, oldest first (the order they should be retried in)."""
    query = (
        select(StripeEvent.id)
        .where(StripeEvent.status.in_(FAILED_STATUSES))
        .order_by(StripeEvent.created, StripeEvent.id)
    )
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def _replay(
    session: Session, event_id: str, context: ProcessingContext, *, diff: bool = False
) -> ReplayResult:
    stored = session.execute(
        select(StripeEvent.customer_id, StripeEvent.payload, StripeEvent.account_id).where(
            StripeEvent.id == event_id
        )
    ).first()
    if stored is None:
        raise EventNotFound(event_id)
    # Lock order as in processing: the customer first, then the event row.
    lock_customer(session, stored.customer_id)
    status_before = session.execute(_LOCK_EVENT, {"id": event_id}).scalar_one()
    event = event_from_payload(stored.payload)

    before: dict[str, Any] | None = None
    if diff:
        # The account may only become known by applying the event (a first link), so the
        # "before" side is read for every account the event could touch, after the fact.
        with session.begin_nested() as probe:
            apply(session, event, context)
            touched = _touched_account(session, event_id)
            probe.rollback()
        session.expire_all()
        before = _snapshot(session, touched) if touched else None

    status_after = apply(session, event, context)
    session.expire_all()
    row = session.execute(
        select(StripeEvent.account_id, StripeEvent.last_error).where(StripeEvent.id == event_id)
    ).one()
    changes: list[tuple[str, Any, Any]] = []
    if diff:
        after = _snapshot(session, row.account_id) if row.account_id else None
        changes = (
            [("event.status", status_before, status_after)] if status_before != status_after else []
        )
        changes += diff_documents(before or {}, after or {})
    return ReplayResult(
        event_id=event_id,
        status_before=status_before,
        status_after=status_after,
        account_id=row.account_id,
        error=row.last_error,
        changes=changes,
    )


def _touched_account(session: Session, event_id: str) -> str | None:
    return session.execute(
        select(StripeEvent.account_id).where(StripeEvent.id == event_id)
    ).scalar_one_or_none()


def _snapshot(session: Session, account_id: str) -> dict[str, Any]:
    account = get_account(session, account_id)
    if account is None:
        return {}
    document = account_document(session, account)
    # Timestamps of the last write change on every apply; they are not a state change.
    for volatile in ("updated_at", "last_change"):
        document.pop(volatile, None)
    return document


def diff_documents(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Flattened differences between two account documents, as (path, before, after)."""
    flat_before = _flatten(before)
    flat_after = _flatten(after)
    changes = []
    for key in sorted(set(flat_before) | set(flat_after)):
        old, new = flat_before.get(key), flat_after.get(key)
        if old != new:
            changes.append((key, old, new))
    return changes


def _flatten(document: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(document, dict):
        flat: dict[str, Any] = {}
        for key, value in document.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(document, list):
        flat = {}
        for item in document:
            label = item.get("id") if isinstance(item, dict) else None
            flat.update(_flatten(item, f"{prefix}[{label}]" if label else f"{prefix}[]"))
        return flat
    return {prefix: document}

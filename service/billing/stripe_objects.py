"""Applying Stripe snapshots (subscriptions, invoices, customers, checkout links).

Webhook handlers and `stripe sync` both call these functions, so drift found by a sync is
fixed through the same code path as a delivered event. Each applier parses the snapshot
and maps its prices to a plan here, then calls the SQL function of migration 0004 that
stores it only when it is newer than the one already stored (`billing.ordering`) and
recomputes the account when what it grants changed; the webhook's direct path calls the
same functions. Nothing here commits.

Accounts are found through the customer's link (`stripe_customers`), else through
`metadata.account_id` on the subscription (which then links the customer). A snapshot
whose customer is not linked is reported with `account_id=None`: the webhook keeps it
`pending` until the link arrives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.orm import Session

from ..stripe_api import StripeObjectNotFound
from .accounts import Cause, recompute_account
from .ordering import invoice_precedence, subscription_precedence
from .plans import Catalogue, load_catalogue, plan_for_prices
from .snapshots import (
    CustomerSnapshot,
    InvoiceSnapshot,
    SubscriptionSnapshot,
    parse_checkout_session,
    parse_customer,
    parse_invoice,
    parse_subscription,
)

log = logging.getLogger(__name__)


class SubscriptionSource(Protocol):
    """The part of the Stripe API client used here (`service.stripe_api.StripeApi`)."""

    def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SnapshotResult:
    """What applying a snapshot did.

    `account_id` is None when the object's customer is not linked to an account yet.
    `applied` is False when a newer (or winning) snapshot was already stored.
    `linked_customer_id` is set when this call linked a customer to an account, so events
    waiting for that link can be applied in the same transaction.
    """

    account_id: str | None
    applied: bool
    linked_customer_id: str | None = None


def _epoch(seconds: int | None) -> int | None:
    """A Stripe timestamp as the SQL functions take it; raises when no timestamp can hold it.

    Checked here so an absurd value fails this event with a clear error instead of a
    database error.
    """
    if seconds is not None:
        datetime.fromtimestamp(seconds, UTC)  # OverflowError, ValueError or OSError
    return seconds


def snapshot_json(record: Mapping[str, Any]) -> str:
    """A snapshot record as the `jsonb` argument of the SQL functions (migration 0004)."""
    return json.dumps(record, separators=(",", ":"))


def _cause_fields(cause: Cause) -> dict[str, Any]:
    return {"event_id": cause.event_id, "ops_action": cause.ops_action}


# --- customers and links ---------------------------------------------------------------

_CUSTOMER_ACCOUNT = text("SELECT account_id FROM stripe_customers WHERE id = :customer_id")
_LINK_CUSTOMER = text("SELECT * FROM billing_link_customer(:customer_id, :account_id, :email)")


def customer_account(session: Session, customer_id: str) -> str | None:
    """The account a Stripe customer is linked to, if any."""
    value: str | None = session.execute(_CUSTOMER_ACCOUNT, {"customer_id": customer_id}).scalar()
    return value


@dataclass(frozen=True)
class Link:
    """The account a customer is linked to, and whether this call created the link."""

    account_id: str
    created: bool


def link_customer(
    session: Session, customer_id: str, account_id: str, *, email: str | None = None
) -> Link:
    """Link a Stripe customer to an account, creating the account (free) if needed.

    Called for `checkout.session.*` events, a subscription's `metadata.account_id`, and by
    ops when they attach a customer by hand. A customer stays linked to the first account:
    a conflicting link is logged (`billing.customer.link_conflict`) and not applied, since
    moving a paying customer between accounts is a decision for a person.
    """
    if not account_id:
        raise ValueError("An account id must not be empty")
    row: Any = session.execute(
        _LINK_CUSTOMER, {"customer_id": customer_id, "account_id": account_id, "email": email}
    ).one()
    if row.created:
        log.info(
            "billing.customer.linked",
            extra={"customer_id": customer_id, "account_id": row.account_id},
        )
    elif row.account_id != account_id:
        log.warning(
            "billing.customer.link_conflict",
            extra={
                "customer_id": customer_id,
                "account_id": row.account_id,
                "requested_account_id": account_id,
            },
        )
    return Link(row.account_id, created=bool(row.created))


_APPLY_CUSTOMER = text("SELECT * FROM billing_apply_customer(CAST(:snapshot AS jsonb))")


def customer_record(snap: CustomerSnapshot, *, created: int, cause: Cause) -> dict[str, Any]:
    """The argument of `billing_apply_customer`."""
    return {
        "id": snap.id,
        "email": snap.email,
        "name": snap.name,
        "deleted": snap.deleted,
        "snapshot_digest": snap.digest,
        "created": _epoch(created),
        **_cause_fields(cause),
    }


def apply_customer_snapshot(
    session: Session,
    customer: dict[str, Any],
    *,
    created: int,
    cause: Cause,
    deleted_event: bool = False,
) -> SnapshotResult:
    """Store a customer's email and name (`customer.updated`) or its deletion.

    A deleted customer stays deleted. The account's email follows the customer's.
    Plans do not change here: Stripe deletes the customer's subscriptions with their own
    `customer.subscription.deleted` events.
    """
    snap = parse_customer(customer, deleted_event=deleted_event)
    record = customer_record(snap, created=created, cause=cause)
    row: Any = session.execute(_APPLY_CUSTOMER, {"snapshot": snapshot_json(record)}).one()
    return SnapshotResult(row.account_id, applied=bool(row.applied))


def apply_checkout_session(session: Session, checkout: dict[str, Any]) -> SnapshotResult:
    """Link the session's customer to the account in `client_reference_id` (or metadata).

    A session without a customer or without an account id (a payment link sold outside
    the product) links nothing and reports `account_id=None`.
    """
    snap = parse_checkout_session(checkout)
    if snap.customer_id is None or snap.account_id is None:
        return SnapshotResult(None, applied=False)
    link = link_customer(session, snap.customer_id, snap.account_id, email=snap.email)
    return SnapshotResult(
        link.account_id,
        applied=link.created,
        linked_customer_id=snap.customer_id if link.created else None,
    )


# --- subscriptions ---------------------------------------------------------------------

# One round trip: the ordered upsert, then the account's recompute when it was applied.
_APPLY_SUBSCRIPTION = text(
    "SELECT * FROM billing_apply_subscription(CAST(:snapshot AS jsonb), :force, :defer_on_tie)"
)


def subscription_record(
    snap: SubscriptionSnapshot,
    *,
    plan_price_map: Mapping[str, str],
    catalogue: Catalogue,
    deleted: bool,
    created: int,
    cause: Cause,
) -> dict[str, Any]:
    """The argument of `billing_apply_subscription`: the columns and the ordering key.

    Maps the snapshot's prices to a plan first; raises `UnknownPrice` when one maps to none.
    """
    plan, price_id = plan_for_prices(snap.prices, plan_price_map, catalogue)
    return {
        "id": snap.id,
        "customer_id": snap.customer_id,
        "status": snap.status,
        "price_id": price_id,
        "plan": plan,
        "current_period_start": _epoch(snap.current_period_start),
        "current_period_end": _epoch(snap.current_period_end),
        "cancel_at_period_end": snap.cancel_at_period_end,
        "cancel_at": _epoch(snap.cancel_at),
        "canceled_at": _epoch(snap.canceled_at),
        "ended_at": _epoch(snap.ended_at),
        "trial_start": _epoch(snap.trial_start),
        "trial_end": _epoch(snap.trial_end),
        "deleted": deleted,
        "status_precedence": subscription_precedence(snap.status),
        "snapshot_digest": snap.digest,
        "created": _epoch(created),
        **_cause_fields(cause),
    }


def _apply_subscription(
    session: Session, record: dict[str, Any], *, force: bool, defer_on_tie: bool
) -> Any:
    return session.execute(
        _APPLY_SUBSCRIPTION,
        {"snapshot": snapshot_json(record), "force": force, "defer_on_tie": defer_on_tie},
    ).one()


def apply_subscription_snapshot(
    session: Session,
    subscription: dict[str, Any],
    *,
    created: int,
    cause: Cause,
    plan_price_map: Mapping[str, str],
    stripe_api: SubscriptionSource | None = None,
    deleted_event: bool = False,
) -> SnapshotResult:
    """Store a subscription snapshot if it is the newest, then recompute its account.

    `created` is the event's `created` (or, for a snapshot fetched by `stripe sync`, the
    time it was fetched). `deleted_event` marks `customer.subscription.deleted`. On a
    same-second tie with a different event and `stripe_api` given, the subscription is
    re-fetched and Stripe's answer stored; without it the ordering key decides
    (`billing.ordering`). Raises `UnknownPrice` when a price maps to no plan, before
    anything is written.
    """
    snap = parse_subscription(subscription)
    catalogue = load_catalogue(session)
    deleted = snap.ended(deleted_event)
    record = subscription_record(
        snap,
        plan_price_map=plan_price_map,
        catalogue=catalogue,
        deleted=deleted,
        created=created,
        cause=cause,
    )
    # With an API client, a same-second tie is stored by the rule but the account is left
    # alone (`tie`), until Stripe's answer below is stored.
    defer = stripe_api is not None
    row = _apply_subscription(session, record, force=False, defer_on_tie=defer)
    linked = None
    if row.account_id is None:
        if snap.account_id_hint is None:
            return SnapshotResult(None, applied=False)
        link = link_customer(session, snap.customer_id, snap.account_id_hint)
        linked = snap.customer_id if link.created else None
        row = _apply_subscription(session, record, force=False, defer_on_tie=defer)
    account_id: str = row.account_id
    applied = bool(row.applied)
    if row.tie and stripe_api is not None:
        fetched_obj = _refetch(stripe_api, snap.id, cause)
        if fetched_obj is not None:
            fetched = parse_subscription(fetched_obj)
            refetched = _apply_subscription(
                session,
                subscription_record(
                    fetched,
                    plan_price_map=plan_price_map,
                    catalogue=catalogue,
                    deleted=fetched.ended() or deleted,
                    created=created,
                    cause=cause,
                ),
                force=True,
                defer_on_tie=False,
            )
            log.info(
                "billing.subscription.refetched",
                extra={
                    "subscription_id": snap.id,
                    "event_id": cause.event_id,
                    "status": fetched.status,
                },
            )
            applied = applied or bool(refetched.applied)
        if applied:
            # The deferred call did not recompute; whichever snapshot is stored now counts.
            recompute_account(session, account_id, cause)
            if row.old_account_id is not None and row.old_account_id != account_id:
                recompute_account(session, row.old_account_id, cause)
    if not applied:
        log.debug(
            "billing.subscription.skipped",
            extra={"subscription_id": snap.id, "event_id": cause.event_id},
        )
    return SnapshotResult(account_id, applied=applied, linked_customer_id=linked)


def _refetch(
    stripe_api: SubscriptionSource, subscription_id: str, cause: Cause
) -> dict[str, Any] | None:
    """The subscription as Stripe holds it now, or None when Stripe does not know it.

    A 404 (another mode or account's key) cannot be fixed by retrying, so the
    deterministic rule decides; any other API error fails the event, which is retried.
    """
    try:
        return stripe_api.retrieve_subscription(subscription_id)
    except StripeObjectNotFound:
        log.warning(
            "billing.subscription.refetch_not_found",
            extra={"subscription_id": subscription_id, "event_id": cause.event_id},
        )
        return None


# --- invoices --------------------------------------------------------------------------

_APPLY_INVOICE = text("SELECT * FROM billing_apply_invoice(CAST(:snapshot AS jsonb))")


def invoice_record(snap: InvoiceSnapshot, *, created: int, cause: Cause) -> dict[str, Any]:
    """The argument of `billing_apply_invoice`: the columns and the ordering key."""
    return {
        "id": snap.id,
        "customer_id": snap.customer_id,
        "subscription_id": snap.subscription_id,
        "status": snap.status,
        "amount_due": snap.amount_due,
        "amount_paid": snap.amount_paid,
        "amount_remaining": snap.amount_remaining,
        "currency": snap.currency,
        "attempt_count": snap.attempt_count,
        "next_payment_attempt": _epoch(snap.next_payment_attempt),
        "hosted_invoice_url": snap.hosted_invoice_url,
        "billing_reason": snap.billing_reason,
        "status_precedence": invoice_precedence(snap.status),
        "snapshot_digest": snap.digest,
        "created": _epoch(created),
        **_cause_fields(cause),
    }


def apply_invoice_snapshot(
    session: Session, invoice: dict[str, Any], *, created: int, cause: Cause
) -> SnapshotResult:
    """Store an invoice snapshot (`invoice.*` events) if it wins the ordering.

    Invoices tell ops about payments (amounts, attempts, the next retry); they do not
    decide the plan: Stripe reports the consequences of a payment as subscription status
    changes (`past_due`, `active`), which `apply_subscription_snapshot` handles.
    """
    snap = parse_invoice(invoice)
    params = {"snapshot": snapshot_json(invoice_record(snap, created=created, cause=cause))}
    row: Any = session.execute(_APPLY_INVOICE, params).one()
    linked = None
    if row.account_id is None:
        if snap.account_id_hint is None:
            return SnapshotResult(None, applied=False)
        link = link_customer(session, snap.customer_id, snap.account_id_hint)
        linked = snap.customer_id if link.created else None
        row = session.execute(_APPLY_INVOICE, params).one()
    return SnapshotResult(row.account_id, applied=bool(row.applied), linked_customer_id=linked)

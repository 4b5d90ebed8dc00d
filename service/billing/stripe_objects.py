"""Applying Stripe snapshots (subscriptions, invoices, customers, checkout links).

Webhook handlers and `stripe sync` both call these functions, so drift found by a sync is
fixed through the same code path as a delivered event. Each applier stores a snapshot
only when it is newer than the one already stored (`billing.ordering`) with one upsert,
then recomputes the account when something that decides its plan changed. Nothing here
commits.

Accounts are found through the customer's link (`stripe_customers`), else through
`metadata.account_id` on the subscription (which then links the customer). A snapshot
whose customer is not linked is reported with `account_id=None`: the webhook keeps it
`pending` until the link arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.orm import Session

from ..stripe_api import StripeObjectNotFound
from .accounts import Cause, ensure_account, recompute_account
from .ordering import invoice_precedence, subscription_precedence
from .plans import grants_access, load_catalogue, plan_for_prices
from .snapshots import (
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


def _ts(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


# --- customers and links ---------------------------------------------------------------

_CUSTOMER_ACCOUNT = text("SELECT account_id FROM stripe_customers WHERE id = :customer_id")
_INSERT_LINK = text(
    """
    INSERT INTO stripe_customers (id, account_id, email)
    VALUES (:customer_id, :account_id, :email)
    ON CONFLICT (id) DO UPDATE SET account_id = stripe_customers.account_id
    RETURNING account_id, (xmax = 0) AS inserted
    """
)


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
    existing = customer_account(session, customer_id)
    if existing is not None:
        if existing != account_id:
            log.warning(
                "billing.customer.link_conflict",
                extra={
                    "customer_id": customer_id,
                    "account_id": existing,
                    "requested_account_id": account_id,
                },
            )
        return Link(existing, created=False)
    ensure_account(session, account_id, email)
    row: Any = session.execute(
        _INSERT_LINK, {"customer_id": customer_id, "account_id": account_id, "email": email}
    ).one()
    log.info("billing.customer.linked", extra={"customer_id": customer_id, "account_id": row[0]})
    return Link(row.account_id, created=bool(row.inserted))


_APPLY_CUSTOMER = text(
    """
    WITH c AS (
        UPDATE stripe_customers AS c
           SET email = :email, name = :name, deleted = :deleted,
               applied_event_id = :event_id, applied_event_created = :created,
               snapshot_digest = :digest, updated_at = now()
         WHERE c.id = :customer_id
           AND (CAST(:deleted AS boolean), CAST(:created AS timestamptz), CAST(:digest AS text),
                coalesce(CAST(:event_id AS text), ''))
             > (c.deleted, coalesce(c.applied_event_created, '-infinity'),
                coalesce(c.snapshot_digest, ''), coalesce(c.applied_event_id, ''))
        RETURNING c.account_id
    ), a AS (
        UPDATE accounts SET email = :email
          FROM c
         WHERE accounts.id = c.account_id AND CAST(:email AS text) IS NOT NULL
           AND accounts.email IS DISTINCT FROM :email
    )
    SELECT account_id FROM c
    """
)


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
    account_id = customer_account(session, snap.id)
    if account_id is None:
        return SnapshotResult(None, applied=False)
    applied = session.execute(
        _APPLY_CUSTOMER,
        {
            "customer_id": snap.id,
            "email": snap.email,
            "name": snap.name,
            "deleted": snap.deleted,
            "event_id": cause.event_id,
            "created": _ts(created),
            "digest": snap.digest,
        },
    ).first()
    return SnapshotResult(account_id, applied=applied is not None)


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

# One round trip: the customer's account, the stored row before (locked) and the ordered
# upsert. Nothing is written while the customer is unlinked (`account_id` comes back NULL).
_UPSERT_SUBSCRIPTION = text(
    """
    WITH link AS (
        SELECT account_id FROM stripe_customers WHERE id = :customer_id
    ), old AS (
        SELECT account_id, status, plan, deleted, applied_event_created, applied_event_id,
               snapshot_digest
          FROM subscriptions WHERE id = :id FOR UPDATE
    ), up AS (
        INSERT INTO subscriptions AS s
               (id, customer_id, account_id, status, price_id, plan,
                current_period_start, current_period_end, cancel_at_period_end, cancel_at,
                canceled_at, ended_at, trial_start, trial_end, deleted,
                status_precedence, snapshot_digest, applied_event_id, applied_event_created)
        SELECT CAST(:id AS text), CAST(:customer_id AS text), link.account_id,
               CAST(:status AS text), CAST(:price_id AS text), CAST(:plan AS text),
               CAST(:current_period_start AS timestamptz),
               CAST(:current_period_end AS timestamptz),
               CAST(:cancel_at_period_end AS boolean), CAST(:cancel_at AS timestamptz),
               CAST(:canceled_at AS timestamptz), CAST(:ended_at AS timestamptz),
               CAST(:trial_start AS timestamptz), CAST(:trial_end AS timestamptz),
               CAST(:deleted AS boolean), CAST(:status_precedence AS smallint),
               CAST(:snapshot_digest AS text), CAST(:event_id AS text),
               CAST(:created AS timestamptz)
          FROM link
        ON CONFLICT (id) DO UPDATE
           SET customer_id = EXCLUDED.customer_id, account_id = EXCLUDED.account_id,
               status = EXCLUDED.status, price_id = EXCLUDED.price_id, plan = EXCLUDED.plan,
               current_period_start = EXCLUDED.current_period_start,
               current_period_end = EXCLUDED.current_period_end,
               cancel_at_period_end = EXCLUDED.cancel_at_period_end,
               cancel_at = EXCLUDED.cancel_at, canceled_at = EXCLUDED.canceled_at,
               ended_at = EXCLUDED.ended_at, trial_start = EXCLUDED.trial_start,
               trial_end = EXCLUDED.trial_end, deleted = EXCLUDED.deleted,
               status_precedence = EXCLUDED.status_precedence,
               snapshot_digest = EXCLUDED.snapshot_digest,
               applied_event_id = EXCLUDED.applied_event_id,
               applied_event_created = EXCLUDED.applied_event_created,
               updated_at = now()
         WHERE (CAST(:force AS boolean) AND (NOT s.deleted OR EXCLUDED.deleted))
            OR (EXCLUDED.deleted, EXCLUDED.applied_event_created, EXCLUDED.status_precedence,
                EXCLUDED.snapshot_digest, coalesce(EXCLUDED.applied_event_id, ''))
             > (s.deleted, s.applied_event_created, s.status_precedence,
                s.snapshot_digest, coalesce(s.applied_event_id, ''))
        RETURNING s.id
    )
    SELECT (SELECT account_id FROM link) AS account_id,
           EXISTS (SELECT 1 FROM up) AS applied,
           old.account_id AS old_account_id, old.status AS old_status, old.plan AS old_plan,
           old.deleted AS old_deleted, old.applied_event_created AS old_created,
           old.applied_event_id AS old_event_id, old.snapshot_digest AS old_digest
      FROM (SELECT 1) AS one LEFT JOIN old ON true
    """
)


def _upsert_subscription(
    session: Session,
    snap: SubscriptionSnapshot,
    *,
    plan: str,
    price_id: str | None,
    deleted: bool,
    created: int,
    cause: Cause,
    force: bool,
) -> Any:
    return session.execute(
        _UPSERT_SUBSCRIPTION,
        {
            "id": snap.id,
            "customer_id": snap.customer_id,
            "status": snap.status,
            "price_id": price_id,
            "plan": plan,
            "current_period_start": _ts(snap.current_period_start),
            "current_period_end": _ts(snap.current_period_end),
            "cancel_at_period_end": snap.cancel_at_period_end,
            "cancel_at": _ts(snap.cancel_at),
            "canceled_at": _ts(snap.canceled_at),
            "ended_at": _ts(snap.ended_at),
            "trial_start": _ts(snap.trial_start),
            "trial_end": _ts(snap.trial_end),
            "deleted": deleted,
            "status_precedence": subscription_precedence(snap.status),
            "snapshot_digest": snap.digest,
            "event_id": cause.event_id,
            "created": _ts(created),
            "force": force,
        },
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
    plan, price_id = plan_for_prices(snap.prices, plan_price_map, catalogue)
    deleted = snap.ended(deleted_event)

    def upsert(
        snapshot: SubscriptionSnapshot, plan: str, price: str | None, gone: bool, force: bool
    ) -> Any:
        return _upsert_subscription(
            session,
            snapshot,
            plan=plan,
            price_id=price,
            deleted=gone,
            created=created,
            cause=cause,
            force=force,
        )

    row = upsert(snap, plan, price_id, deleted, False)
    linked = None
    if row.account_id is None:
        if snap.account_id_hint is None:
            return SnapshotResult(None, applied=False)
        link = link_customer(session, snap.customer_id, snap.account_id_hint)
        linked = snap.customer_id if link.created else None
        row = upsert(snap, plan, price_id, deleted, False)
    account_id: str = row.account_id
    applied = bool(row.applied)
    final = (snap.status, plan, deleted)
    # Two different snapshots of one second: only Stripe knows which came last.
    tie = (
        row.old_created is not None
        and int(row.old_created.timestamp()) == created
        and row.old_event_id != cause.event_id
        and row.old_digest != snap.digest
    )
    fetched_obj = _refetch(stripe_api, snap.id, cause) if tie and stripe_api is not None else None
    if fetched_obj is not None:
        fetched = parse_subscription(fetched_obj)
        fetched_plan, fetched_price = plan_for_prices(fetched.prices, plan_price_map, catalogue)
        fetched_deleted = fetched.ended() or deleted
        refetched = upsert(fetched, fetched_plan, fetched_price, fetched_deleted, True)
        log.info(
            "billing.subscription.refetched",
            extra={
                "subscription_id": snap.id,
                "event_id": cause.event_id,
                "status": fetched.status,
            },
        )
        if refetched.applied:
            applied = True
            final = (fetched.status, fetched_plan, fetched_deleted)
    if not applied:
        log.debug(
            "billing.subscription.skipped",
            extra={"subscription_id": snap.id, "event_id": cause.event_id},
        )
        return SnapshotResult(account_id, applied=False, linked_customer_id=linked)
    # The account's plan depends only on what each subscription grants, so a change that
    # grants the same (active -> past_due, a new period) needs no recompute.
    before = (
        None if row.old_status is None else _grants(row.old_status, row.old_plan, row.old_deleted)
    )
    if before != _grants(*final) or row.old_account_id != account_id:
        recompute_account(session, account_id, cause)
        if row.old_account_id is not None and row.old_account_id != account_id:
            recompute_account(session, row.old_account_id, cause)
    return SnapshotResult(account_id, applied=True, linked_customer_id=linked)


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


def _grants(status: str, plan: str, deleted: bool) -> str | None:
    """The plan a subscription in this state grants its account, if any."""
    return plan if grants_access(status, deleted) else None


# --- invoices --------------------------------------------------------------------------

_UPSERT_INVOICE = text(
    """
    WITH link AS (
        SELECT account_id FROM stripe_customers WHERE id = :customer_id
    ), up AS (
    INSERT INTO invoices AS i
           (id, customer_id, account_id, subscription_id, status, amount_due, amount_paid,
            amount_remaining, currency, attempt_count, next_payment_attempt,
            hosted_invoice_url, billing_reason, status_precedence, snapshot_digest,
            applied_event_id, applied_event_created)
    SELECT CAST(:id AS text), CAST(:customer_id AS text), link.account_id,
           CAST(:subscription_id AS text), CAST(:status AS text), CAST(:amount_due AS bigint),
           CAST(:amount_paid AS bigint), CAST(:amount_remaining AS bigint),
           CAST(:currency AS text), CAST(:attempt_count AS integer),
           CAST(:next_payment_attempt AS timestamptz), CAST(:hosted_invoice_url AS text),
           CAST(:billing_reason AS text), CAST(:status_precedence AS smallint),
           CAST(:snapshot_digest AS text), CAST(:event_id AS text),
           CAST(:created AS timestamptz)
      FROM link
    ON CONFLICT (id) DO UPDATE
       SET customer_id = EXCLUDED.customer_id, account_id = EXCLUDED.account_id,
           subscription_id = coalesce(EXCLUDED.subscription_id, i.subscription_id),
           status = EXCLUDED.status, amount_due = EXCLUDED.amount_due,
           amount_paid = EXCLUDED.amount_paid, amount_remaining = EXCLUDED.amount_remaining,
           currency = EXCLUDED.currency, attempt_count = EXCLUDED.attempt_count,
           next_payment_attempt = EXCLUDED.next_payment_attempt,
           hosted_invoice_url = EXCLUDED.hosted_invoice_url,
           billing_reason = EXCLUDED.billing_reason,
           status_precedence = EXCLUDED.status_precedence,
           snapshot_digest = EXCLUDED.snapshot_digest,
           applied_event_id = EXCLUDED.applied_event_id,
           applied_event_created = EXCLUDED.applied_event_created,
           updated_at = now()
     WHERE (EXCLUDED.status_precedence, EXCLUDED.applied_event_created,
            EXCLUDED.snapshot_digest, coalesce(EXCLUDED.applied_event_id, ''))
         > (i.status_precedence, i.applied_event_created, i.snapshot_digest,
            coalesce(i.applied_event_id, ''))
    RETURNING i.id
    )
    SELECT (SELECT account_id FROM link) AS account_id, EXISTS (SELECT 1 FROM up) AS applied
    """
)


def apply_invoice_snapshot(
    session: Session, invoice: dict[str, Any], *, created: int, cause: Cause
) -> SnapshotResult:
    """Store an invoice snapshot (`invoice.*` events) if it wins the ordering.

    Invoices tell ops about payments (amounts, attempts, the next retry); they do not
    decide the plan: Stripe reports the consequences of a payment as subscription status
    changes (`past_due`, `active`), which `apply_subscription_snapshot` handles.
    """
    snap = parse_invoice(invoice)
    params = {
        "id": snap.id,
        "customer_id": snap.customer_id,
        "subscription_id": snap.subscription_id,
        "status": snap.status,
        "amount_due": snap.amount_due,
        "amount_paid": snap.amount_paid,
        "amount_remaining": snap.amount_remaining,
        "currency": snap.currency,
        "attempt_count": snap.attempt_count,
        "next_payment_attempt": _ts(snap.next_payment_attempt),
        "hosted_invoice_url": snap.hosted_invoice_url,
        "billing_reason": snap.billing_reason,
        "status_precedence": invoice_precedence(snap.status),
        "snapshot_digest": snap.digest,
        "event_id": cause.event_id,
        "created": _ts(created),
    }
    row: Any = session.execute(_UPSERT_INVOICE, params).one()
    linked = None
    if row.account_id is None:
        if snap.account_id_hint is None:
            return SnapshotResult(None, applied=False)
        link = link_customer(session, snap.customer_id, snap.account_id_hint)
        linked = snap.customer_id if link.created else None
        row = session.execute(_UPSERT_INVOICE, params).one()
    return SnapshotResult(row.account_id, applied=bool(row.applied), linked_customer_id=linked)

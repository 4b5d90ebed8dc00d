"""The literal table from Stripe event type to the handler that applies it.

A type missing from `HANDLERS` is stored and marked `ignored`. Each handler takes the
session, the event and the processing context, changes state from the event's snapshot
(never by incrementing) and says what became of the event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from sqlalchemy.orm import Session

from ..billing.accounts import Cause
from ..billing.stripe_objects import (
    SnapshotResult,
    apply_checkout_session,
    apply_customer_snapshot,
    apply_invoice_snapshot,
    apply_subscription_snapshot,
)
from . import models
from .payload import Event

if TYPE_CHECKING:
    from .processing import ProcessingContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What a handler did with an event.

    `status` is `processed`, `pending` (waiting for its customer to be linked to an
    account) or `ignored`. `linked_customer_id` is set when the handler linked a customer
    to an account, so events waiting for that link are applied in the same transaction.
    """

    status: str
    account_id: str | None = None
    linked_customer_id: str | None = None


Handler = Callable[[Session, Event, "ProcessingContext"], Outcome]


def _outcome(result: SnapshotResult) -> Outcome:
    """`pending` while the object's customer is not linked to an account, else processed."""
    if result.account_id is None:
        return Outcome(models.PENDING)
    return Outcome(models.PROCESSED, result.account_id, result.linked_customer_id)


def _subscription(
    session: Session, event: Event, context: ProcessingContext, *, deleted: bool = False
) -> Outcome:
    return _outcome(
        apply_subscription_snapshot(
            session,
            event.data_object,
            created=event.created,
            cause=Cause.event(event.id),
            plan_price_map=context.settings.plan_price_map,
            stripe_api=context.stripe_api,
            deleted_event=deleted,
        )
    )


def _invoice(session: Session, event: Event) -> Outcome:
    return _outcome(
        apply_invoice_snapshot(
            session, event.data_object, created=event.created, cause=Cause.event(event.id)
        )
    )


def _checkout(session: Session, event: Event) -> Outcome:
    result = apply_checkout_session(session, event.data_object)
    if result.account_id is None:
        # No account id or no customer: a payment outside the product, nothing to link.
        log.warning(
            "billing.checkout.unlinkable",
            extra={"event_id": event.id, "checkout_session_id": event.data_object.get("id")},
        )
        return Outcome(models.IGNORED)
    return Outcome(models.PROCESSED, result.account_id, result.linked_customer_id)


def handle_checkout_session_completed(
    session: Session, event: Event, context: ProcessingContext
) -> Outcome:
    """`checkout.session.completed`: link the customer to `client_reference_id`'s account."""
    return _checkout(session, event)


def handle_checkout_session_async_payment_succeeded(
    session: Session, event: Event, context: ProcessingContext
) -> Outcome:
    """`checkout.session.async_payment_succeeded`: the same link (it may arrive first)."""
    return _checkout(session, event)


def handle_checkout_session_async_payment_failed(
    session: Session, event: Event, context: ProcessingContext
) -> Outcome:
    """`checkout.session.async_payment_failed`: link anyway; the plan follows the
    subscription, which Stripe reports as `incomplete`/`incomplete_expired`."""
    return _checkout(session, event)


def handle_subscription_created(
    session: Session, event: Event, context: ProcessingContext
) -> Outcome:
    """`customer.subscription.created`: store the snapshot, recompute the account."""
    return _subscription(session, event, context)


def handle_subscription_updated(
    session: Session, event: Event, context: ProcessingContext
) -> Outcome:
    """`customer.subscription.updated`: status, price or period changed."""
    return _subscription(session, event, context)


def handle_subscription_deleted(
    session: Session, event: Event, context: ProcessingContext
) -> Outcome:
    """`customer.subscription.deleted`: the subscription ended for good; never revived."""
    return _subscription(session, event, context, deleted=True)


def handle_subscription_paused(
    session: Session, event: Event, context: ProcessingContext
) -> Outcome:
    """`customer.subscription.paused`: status `paused` grants nothing."""
    return _subscription(session, event, context)


def handle_subscription_resumed(
    session: Session, event: Event, context: ProcessingContext
) -> Outcome:
    """`customer.subscription.resumed`: back to its snapshot's status (usually `active`)."""
    return _subscription(session, event, context)


def handle_subscription_trial_will_end(
    session: Session, event: Event, context: ProcessingContext
) -> Outcome:
    """`customer.subscription.trial_will_end`: a snapshot like any other (still trialing)."""
    return _subscription(session, event, context)


def handle_invoice_paid(session: Session, event: Event, context: ProcessingContext) -> Outcome:
    """`invoice.paid`: record the paid invoice."""
    return _invoice(session, event)


def handle_invoice_payment_succeeded(
    session: Session, event: Event, context: ProcessingContext
) -> Outcome:
    """`invoice.payment_succeeded`: record the invoice (sent alongside `invoice.paid`)."""
    return _invoice(session, event)


def handle_invoice_payment_failed(
    session: Session, event: Event, context: ProcessingContext
) -> Outcome:
    """`invoice.payment_failed`: record attempts and the next retry for ops."""
    return _invoice(session, event)


def handle_invoice_payment_action_required(
    session: Session, event: Event, context: ProcessingContext
) -> Outcome:
    """`invoice.payment_action_required`: record the invoice awaiting the customer (3DS)."""
    return _invoice(session, event)


def handle_customer_updated(session: Session, event: Event, context: ProcessingContext) -> Outcome:
    """`customer.updated`: the customer's email and name (the account's email follows)."""
    return _outcome(
        apply_customer_snapshot(
            session, event.data_object, created=event.created, cause=Cause.event(event.id)
        )
    )


def handle_customer_deleted(session: Session, event: Event, context: ProcessingContext) -> Outcome:
    """`customer.deleted`: mark the customer deleted; its subscriptions end by their own
    `customer.subscription.deleted` events."""
    return _outcome(
        apply_customer_snapshot(
            session,
            event.data_object,
            created=event.created,
            cause=Cause.event(event.id),
            deleted_event=True,
        )
    )


HANDLERS: Final[dict[str, Handler]] = {
    "checkout.session.completed": handle_checkout_session_completed,
    "checkout.session.async_payment_succeeded": handle_checkout_session_async_payment_succeeded,
    "checkout.session.async_payment_failed": handle_checkout_session_async_payment_failed,
    "customer.subscription.created": handle_subscription_created,
    "customer.subscription.updated": handle_subscription_updated,
    "customer.subscription.deleted": handle_subscription_deleted,
    "customer.subscription.paused": handle_subscription_paused,
    "customer.subscription.resumed": handle_subscription_resumed,
    "customer.subscription.trial_will_end": handle_subscription_trial_will_end,
    "invoice.paid": handle_invoice_paid,
    "invoice.payment_succeeded": handle_invoice_payment_succeeded,
    "invoice.payment_failed": handle_invoice_payment_failed,
    "invoice.payment_action_required": handle_invoice_payment_action_required,
    "customer.updated": handle_customer_updated,
    "customer.deleted": handle_customer_deleted,
}

"""The literal table from Stripe event type to the handler that applies it.

A type missing from `HANDLERS` is stored and marked `ignored`. Each handler takes the
session, the event and the processing context, changes state from the event's snapshot
(never by incrementing) and says what became of the event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from sqlalchemy.orm import Session

from . import models
from .payload import Event

if TYPE_CHECKING:
    from .processing import ProcessingContext


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


def _awaiting_billing(session: Session, event: Event, context: ProcessingContext) -> Outcome:
    """Known type, kept as `pending` until its billing handler applies it."""
    return Outcome(models.PENDING)


HANDLERS: Final[dict[str, Handler]] = {
    "checkout.session.completed": _awaiting_billing,
    "checkout.session.async_payment_succeeded": _awaiting_billing,
    "checkout.session.async_payment_failed": _awaiting_billing,
    "customer.subscription.created": _awaiting_billing,
    "customer.subscription.updated": _awaiting_billing,
    "customer.subscription.deleted": _awaiting_billing,
    "customer.subscription.paused": _awaiting_billing,
    "customer.subscription.resumed": _awaiting_billing,
    "customer.subscription.trial_will_end": _awaiting_billing,
    "invoice.paid": _awaiting_billing,
    "invoice.payment_succeeded": _awaiting_billing,
    "invoice.payment_failed": _awaiting_billing,
    "invoice.payment_action_required": _awaiting_billing,
    "customer.updated": _awaiting_billing,
    "customer.deleted": _awaiting_billing,
}

"""Realistic sample Stripe events for `webhooks stripe send-test-event`.

Shapes follow the current API version (billing periods on `items.data[]`, the invoice's
subscription under `parent.subscription_details`), so a deployment checked with them takes
the same path a real delivery takes. Ids are fresh each time, so a sample is never answered
`duplicate`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any, Final

API_VERSION: Final = "2025-06-30.basil"
DAY: Final = 24 * 3600


def _id(prefix: str) -> str:
    return f"{prefix}_test{secrets.token_hex(10)}"


def _price(plan: str) -> dict[str, Any]:
    return {
        "id": f"price_test_{plan}_monthly",
        "object": "price",
        "active": True,
        "currency": "usd",
        "lookup_key": f"{plan}_monthly",
        "metadata": {"plan": plan},
        "recurring": {"interval": "month", "interval_count": 1},
        "type": "recurring",
        "unit_amount": {"pro": 2900, "scale": 9900, "enterprise": 49900}.get(plan, 0),
    }


def subscription(
    customer: str, account: str, *, status: str = "active", plan: str = "pro"
) -> dict[str, Any]:
    now = int(time.time())
    sub_id = _id("sub")
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "cancel_at_period_end": False,
        "cancel_at": None,
        "canceled_at": None,
        "ended_at": None,
        "created": now - DAY,
        "start_date": now - DAY,
        "trial_start": None,
        "trial_end": None,
        "livemode": False,
        "metadata": {"account_id": account},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": _id("si"),
                    "object": "subscription_item",
                    "subscription": sub_id,
                    "quantity": 1,
                    "price": _price(plan),
                    "current_period_start": now - DAY,
                    "current_period_end": now + 29 * DAY,
                }
            ],
            "has_more": False,
        },
    }


def invoice(customer: str, *, paid: bool) -> dict[str, Any]:
    now = int(time.time())
    amount = 2900
    return {
        "id": _id("in"),
        "object": "invoice",
        "customer": customer,
        "status": "paid" if paid else "open",
        "amount_due": amount,
        "amount_paid": amount if paid else 0,
        "amount_remaining": 0 if paid else amount,
        "currency": "usd",
        "attempt_count": 1,
        "attempted": True,
        "billing_reason": "subscription_cycle",
        "next_payment_attempt": None if paid else now + 3 * DAY,
        "hosted_invoice_url": None,
        "created": now,
        "period_start": now - DAY,
        "period_end": now,
        "livemode": False,
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": _id("sub"), "metadata": {}},
        },
    }


def checkout_session(customer: str, account: str, *, status: str = "complete") -> dict[str, Any]:
    return {
        "id": _id("cs"),
        "object": "checkout.session",
        "mode": "subscription",
        "status": status,
        "payment_status": "paid" if status == "complete" else "unpaid",
        "customer": customer,
        "customer_details": {"email": f"{account}@example.com"},
        "client_reference_id": account,
        "metadata": {"account_id": account},
        "subscription": _id("sub"),
        "livemode": False,
    }


def customer_object(customer: str, account: str, *, deleted: bool = False) -> dict[str, Any]:
    if deleted:
        return {"id": customer, "object": "customer", "deleted": True}
    return {
        "id": customer,
        "object": "customer",
        "email": f"{account}@example.com",
        "name": f"Test account {account}",
        "metadata": {"account_id": account},
        "livemode": False,
    }


_OBJECTS: Final[dict[str, Callable[[str, str], dict[str, Any]]]] = {
    "checkout.session.completed": lambda c, a: checkout_session(c, a),
    "checkout.session.async_payment_succeeded": lambda c, a: checkout_session(c, a),
    "checkout.session.async_payment_failed": lambda c, a: checkout_session(c, a, status="open"),
    "customer.subscription.created": lambda c, a: subscription(c, a, status="incomplete"),
    "customer.subscription.updated": lambda c, a: subscription(c, a),
    "customer.subscription.deleted": lambda c, a: subscription(c, a, status="canceled"),
    "customer.subscription.paused": lambda c, a: subscription(c, a, status="paused"),
    "customer.subscription.resumed": lambda c, a: subscription(c, a),
    "customer.subscription.trial_will_end": lambda c, a: subscription(c, a, status="trialing"),
    "invoice.paid": lambda c, a: invoice(c, paid=True),
    "invoice.payment_succeeded": lambda c, a: invoice(c, paid=True),
    "invoice.payment_failed": lambda c, a: invoice(c, paid=False),
    "invoice.payment_action_required": lambda c, a: invoice(c, paid=False),
    "customer.updated": lambda c, a: customer_object(c, a),
    "customer.deleted": lambda c, a: customer_object(c, a, deleted=True),
}
SAMPLE_TYPES: Final = tuple(_OBJECTS)


def sample_event(
    event_type: str, *, customer: str | None = None, account: str | None = None
) -> dict[str, Any]:
    """A snapshot event of `event_type` as Stripe would send it, with fresh ids."""
    customer = customer or _id("cus")
    account = account or f"acct_{secrets.token_hex(6)}"
    return {
        "id": _id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": int(time.time()),
        "data": {"object": _OBJECTS[event_type](customer, account)},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }

"""Stripe objects for the ops tests, in the current API version's shapes."""

from __future__ import annotations

import time
from typing import Any

DAY = 24 * 3600


def price(price_id: str, plan: str | None = None) -> dict[str, Any]:
    """A recurring price; `plan` goes in metadata (None: a price no rule maps)."""
    return {
        "id": price_id,
        "object": "price",
        "active": True,
        "currency": "usd",
        "lookup_key": None,
        "metadata": {"plan": plan} if plan else {},
        "recurring": {"interval": "month", "interval_count": 1},
        "type": "recurring",
        "unit_amount": 2900,
    }


def subscription(
    sub_id: str,
    customer: str,
    *,
    status: str = "active",
    price_obj: dict[str, Any] | None = None,
    account_id: str | None = None,
    created: int | None = None,
    cancel_at_period_end: bool = False,
) -> dict[str, Any]:
    now = created or int(time.time())
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "created": now,
        "cancel_at_period_end": cancel_at_period_end,
        "cancel_at": None,
        "canceled_at": None,
        "ended_at": None,
        "trial_start": None,
        "trial_end": None,
        "livemode": False,
        "metadata": {"account_id": account_id} if account_id else {},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_{sub_id}",
                    "object": "subscription_item",
                    "quantity": 1,
                    "price": price_obj or price("price_pro", "pro"),
                    "current_period_start": now,
                    "current_period_end": now + 30 * DAY,
                }
            ],
            "has_more": False,
        },
    }


def customer(customer_id: str, *, email: str | None, account_id: str | None) -> dict[str, Any]:
    return {
        "id": customer_id,
        "object": "customer",
        "email": email,
        "name": None,
        "metadata": {"account_id": account_id} if account_id else {},
        "livemode": False,
        "created": int(time.time()) - DAY,
    }


def checkout_completed(account_id: str, customer_id: str, email: str) -> dict[str, Any]:
    return {
        "id": f"cs_{account_id}",
        "object": "checkout.session",
        "mode": "subscription",
        "status": "complete",
        "payment_status": "paid",
        "customer": customer_id,
        "customer_details": {"email": email},
        "client_reference_id": account_id,
        "metadata": {},
        "livemode": False,
    }

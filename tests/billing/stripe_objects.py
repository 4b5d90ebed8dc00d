"""Stripe objects shaped as the API sends them, for fixtures and event streams.

`api="basil"` builds the current shapes (2025-06-30.basil: billing period on
`items.data[]`, the invoice's subscription under `parent.subscription_details`);
`api="legacy"` the 2024-06-20 shapes (`current_period_*` on the subscription,
`invoice.subscription`). Field sets follow Stripe's API reference for those versions.
"""

from __future__ import annotations

import copy
from typing import Any

BASIL = "2025-06-30.basil"
LEGACY = "2024-06-20"

ACCOUNT_ID = "acc_7Hq2mZ"
CUSTOMER_ID = "cus_RZ3pLqW8vN2xYk"
SUBSCRIPTION_ID = "sub_1RZ3qA2eZvKYlo2C8kP0xT4m"
EMAIL = "billing@acme.example"

T0 = 1_764_806_400  # 2025-12-04T00:00:00Z
MONTH = 30 * 86_400

PRODUCT_ID = "prod_RZ3nWxq0b6Vb1c"

PRICES: dict[str, dict[str, Any]] = {}


def price(
    price_id: str,
    *,
    unit_amount: int,
    lookup_key: str | None = None,
    plan: str | None = None,
    interval: str = "month",
) -> dict[str, Any]:
    """A recurring price; `plan` goes to `metadata.plan`."""
    obj = {
        "id": price_id,
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": T0 - 90 * 86_400,
        "currency": "usd",
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": lookup_key,
        "metadata": {"plan": plan} if plan else {},
        "nickname": None,
        "product": PRODUCT_ID,
        "recurring": {
            "aggregate_usage": None,
            "interval": interval,
            "interval_count": 1,
            "meter": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        },
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring",
        "unit_amount": unit_amount,
        "unit_amount_decimal": str(unit_amount),
    }
    PRICES[price_id] = obj
    return obj


PRO = price("price_1RZ3nB2eZvKYlo2CqLpro01", unit_amount=2900, lookup_key="pro_monthly")
SCALE = price("price_1RZ3nB2eZvKYlo2CqLscl01", unit_amount=9900, plan="scale")
ENTERPRISE = price("price_1RZ3nB2eZvKYlo2CqLent01", unit_amount=99000, lookup_key="enterprise")
UNMAPPED = price("price_1RZ3nB2eZvKYlo2CqLunk01", unit_amount=4900)


def _legacy_plan(p: dict[str, Any]) -> dict[str, Any]:
    """The `plan` object older versions put beside `price` on a subscription item."""
    return {
        "id": p["id"],
        "object": "plan",
        "active": True,
        "amount": p["unit_amount"],
        "amount_decimal": p["unit_amount_decimal"],
        "billing_scheme": "per_unit",
        "created": p["created"],
        "currency": "usd",
        "interval": p["recurring"]["interval"],
        "interval_count": 1,
        "livemode": False,
        "metadata": dict(p["metadata"]),
        "meter": None,
        "nickname": None,
        "product": PRODUCT_ID,
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }


def subscription(
    status: str,
    price_obj: dict[str, Any] = PRO,
    *,
    api: str = BASIL,
    sub_id: str = SUBSCRIPTION_ID,
    customer: str = CUSTOMER_ID,
    period_start: int = T0,
    cancel_at_period_end: bool = False,
    trial_start: int | None = None,
    trial_end: int | None = None,
    canceled_at: int | None = None,
    ended_at: int | None = None,
    metadata: dict[str, str] | None = None,
    latest_invoice: str | None = "in_1RZ3rC2eZvKYlo2Cv1aB0001",
) -> dict[str, Any]:
    """A subscription with one item on `price_obj`."""
    period_end = period_start + MONTH
    item: dict[str, Any] = {
        "id": "si_RZ3qBxP2Lm7wQe",
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": T0,
        "discounts": [],
        "metadata": {},
        "plan": _legacy_plan(price_obj),
        "price": copy.deepcopy(price_obj),
        "quantity": 1,
        "subscription": sub_id,
        "tax_rates": [],
    }
    if api == BASIL:
        item["current_period_start"] = period_start
        item["current_period_end"] = period_end
    obj: dict[str, Any] = {
        "id": sub_id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": period_start,
        "billing_cycle_anchor_config": None,
        "billing_thresholds": None,
        "cancel_at": period_end if cancel_at_period_end else None,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": canceled_at,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": T0,
        "currency": "usd",
        "customer": customer,
        "days_until_due": None,
        "default_payment_method": "pm_1RZ3pM2eZvKYlo2CfXk9Vd3s",
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "ended_at": ended_at,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": {
            "object": "list",
            "data": [item],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/subscription_items?subscription={sub_id}",
        },
        "latest_invoice": latest_invoice,
        "livemode": False,
        "metadata": dict(metadata or {}),
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "on_subscription",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": T0,
        "status": status,
        "test_clock": None,
        "transfer_data": None,
        "trial_end": trial_end,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": trial_start,
    }
    if api == BASIL:
        obj["billing_mode"] = {"type": "classic"}
    else:
        obj["current_period_start"] = period_start
        obj["current_period_end"] = period_end
        obj["plan"] = _legacy_plan(price_obj)
        obj["quantity"] = 1
        obj["discount"] = None
    return obj


def invoice(
    status: str,
    *,
    api: str = BASIL,
    invoice_id: str = "in_1RZ3rC2eZvKYlo2Cv1aB0001",
    customer: str = CUSTOMER_ID,
    sub_id: str | None = SUBSCRIPTION_ID,
    amount: int = 2900,
    attempt_count: int = 1,
    next_payment_attempt: int | None = None,
    billing_reason: str = "subscription_create",
    sub_metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An invoice of one subscription period."""
    paid = status == "paid"
    obj: dict[str, Any] = {
        "id": invoice_id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Acme API",
        "account_tax_ids": None,
        "amount_due": amount,
        "amount_overpaid": 0,
        "amount_paid": amount if paid else 0,
        "amount_remaining": 0 if paid else amount,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": attempt_count,
        "attempted": attempt_count > 0,
        "auto_advance": not paid,
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "status": None,
        },
        "automatically_finalizes_at": None,
        "billing_reason": billing_reason,
        "collection_method": "charge_automatically",
        "created": T0,
        "currency": "usd",
        "custom_fields": None,
        "customer": customer,
        "customer_address": None,
        "customer_email": EMAIL,
        "customer_name": "Acme Corp",
        "customer_phone": None,
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "due_date": None,
        "effective_at": T0,
        "ending_balance": 0,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_1RZ3kE2eZvKYlo2C/test_{invoice_id}",
        "invoice_pdf": f"https://pay.stripe.com/invoice/acct_1RZ3kE2eZvKYlo2C/test_{invoice_id}/pdf",
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": {
            "object": "list",
            "data": [],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": next_payment_attempt,
        "number": "ACME-0001",
        "on_behalf_of": None,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": T0,
        "period_start": T0,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": status,
        "status_transitions": {
            "finalized_at": T0,
            "marked_uncollectible_at": None,
            "paid_at": T0 if paid else None,
            "voided_at": None,
        },
        "subtotal": amount,
        "subtotal_excluding_tax": amount,
        "test_clock": None,
        "total": amount,
        "total_discount_amounts": [],
        "total_excluding_tax": amount,
        "total_taxes": [],
        "webhooks_delivered_at": T0,
    }
    details = {"metadata": dict(sub_metadata or {}), "subscription": sub_id}
    if api == BASIL:
        obj["parent"] = (
            {"quote_details": None, "subscription_details": details, "type": "subscription_details"}
            if sub_id
            else None
        )
    else:
        obj["subscription"] = sub_id
        obj["subscription_details"] = {"metadata": details["metadata"]}
        obj["paid"] = paid
        obj["charge"] = "ch_3RZ3sD2eZvKYlo2C0q1w2e3r" if paid else None
        obj["payment_intent"] = "pi_3RZ3sD2eZvKYlo2C0a9s8d7f"
    return obj


def checkout_session(
    *,
    account_id: str | None = ACCOUNT_ID,
    via_metadata: bool = False,
    customer: str | None = CUSTOMER_ID,
    payment_status: str = "paid",
    session_id: str = "cs_test_a1Kp9XzQ3rLmN7vB2cD4eF6gH8jK0lM",
) -> dict[str, Any]:
    """A completed Checkout Session in subscription mode."""
    return {
        "id": session_id,
        "object": "checkout.session",
        "adaptive_pricing": {"enabled": False},
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": 2900,
        "amount_total": 2900,
        "automatic_tax": {"enabled": False, "liability": None, "status": None},
        "billing_address_collection": None,
        "cancel_url": "https://app.acme.example/billing",
        "client_reference_id": None if via_metadata else account_id,
        "client_secret": None,
        "consent": None,
        "consent_collection": None,
        "created": T0,
        "currency": "usd",
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": customer,
        "customer_creation": "always",
        "customer_details": {
            "address": {
                "city": None,
                "country": "US",
                "line1": None,
                "line2": None,
                "postal_code": "94107",
                "state": None,
            },
            "email": EMAIL,
            "name": "Acme Corp",
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
        "customer_email": None,
        "expires_at": T0 + 86_400,
        "invoice": "in_1RZ3rC2eZvKYlo2Cv1aB0001",
        "invoice_creation": None,
        "livemode": False,
        "locale": None,
        "metadata": {"account_id": account_id} if via_metadata and account_id else {},
        "mode": "subscription",
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "always",
        "payment_method_types": ["card"],
        "payment_status": payment_status,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "complete",
        "submit_type": None,
        "subscription": SUBSCRIPTION_ID,
        "success_url": "https://app.acme.example/billing/success",
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": None,
    }


def customer(
    *, email: str | None = EMAIL, name: str | None = "Acme Corp", customer_id: str = CUSTOMER_ID
) -> dict[str, Any]:
    """A customer object."""
    return {
        "id": customer_id,
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": T0 - 3600,
        "currency": "usd",
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": email,
        "invoice_prefix": "ACME1234",
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": name,
        "next_invoice_sequence": 2,
        "phone": None,
        "preferred_locales": ["en"],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }

"""Reading Stripe objects into typed snapshots, whatever the endpoint's API version.

Shapes differ by API version, not by library version:
- the billing period sits on `subscription.items.data[]` (2025-03-31.basil and later) or
  on the subscription itself (`current_period_start/end`, earlier versions);
- the invoice's subscription sits under `invoice.parent.subscription_details.subscription`
  (basil and later) or at `invoice.subscription` (earlier), as an id or expanded;
- an item's price is `item.price` (an object or an id) or, on very old versions, `item.plan`.
A missing required field raises `SnapshotError` naming it, so the event fails visibly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .ordering import TERMINAL_SUBSCRIPTION_STATUSES, digest
from .plans import Price


class SnapshotError(ValueError):
    """A Stripe object lacks a field the billing domain needs."""


def _str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _int(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _id_of(value: Any) -> str | None:
    """An id given as a string or as an expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _metadata(obj: dict[str, Any] | None) -> dict[str, Any]:
    meta = (obj or {}).get("metadata")
    return meta if isinstance(meta, dict) else {}


def customer_id_of(obj: dict[str, Any]) -> str | None:
    """The customer of a Stripe object: itself for a customer, else its `customer` field."""
    if obj.get("object") == "customer":
        return _str(obj, "id")
    return _id_of(obj.get("customer"))


def _required(obj: dict[str, Any], key: str, what: str) -> str:
    value = _str(obj, key)
    if value is None:
        raise SnapshotError(f"The {what} has no {key!r}")
    return value


def _price(value: Any) -> Price | None:
    if isinstance(value, str) and value:
        return Price(value)
    if isinstance(value, dict) and _str(value, "id"):
        plan = _metadata(value).get("plan")
        return Price(
            id=value["id"],
            metadata_plan=plan if isinstance(plan, str) and plan else None,
            lookup_key=_str(value, "lookup_key"),
        )
    return None


@dataclass(frozen=True)
class SubscriptionSnapshot:
    """The parts of a Stripe subscription that decide an account's plan, plus ops context."""

    id: str
    customer_id: str
    status: str
    prices: tuple[Price, ...]
    current_period_start: int | None
    current_period_end: int | None
    cancel_at_period_end: bool
    cancel_at: int | None
    canceled_at: int | None
    ended_at: int | None
    trial_start: int | None
    trial_end: int | None
    account_id_hint: str | None

    def ended(self, deleted_event: bool = False) -> bool:
        """Whether the subscription is over for good (it then never comes back)."""
        return deleted_event or self.status in TERMINAL_SUBSCRIPTION_STATUSES

    @property
    def digest(self) -> str:
        return digest(self)


def parse_subscription(obj: dict[str, Any]) -> SubscriptionSnapshot:
    """A subscription snapshot from `data.object` or an API response."""
    sub_id = _required(obj, "id", "subscription")
    customer = customer_id_of(obj)
    if customer is None:
        raise SnapshotError(f"The subscription {sub_id} has no 'customer'")
    status = _required(obj, "status", f"subscription {sub_id}")
    items_raw = obj.get("items")
    items = items_raw.get("data") if isinstance(items_raw, dict) else None
    items = [item for item in (items or []) if isinstance(item, dict)]
    prices: list[Price] = []
    for item in items:
        price = _price(item.get("price")) or _price(item.get("plan"))
        if price is not None:
            prices.append(price)
    if not items and (legacy := _price(obj.get("plan"))) is not None:
        prices.append(legacy)
    # Current versions put the period on each item; older ones on the subscription.
    starts = [s for item in items if (s := _int(item, "current_period_start")) is not None]
    ends = [e for item in items if (e := _int(item, "current_period_end")) is not None]
    period_start = _int(obj, "current_period_start")
    period_end = _int(obj, "current_period_end")
    if period_start is None and starts:
        period_start = min(starts)
    if period_end is None and ends:
        period_end = max(ends)
    hint = _metadata(obj).get("account_id")
    return SubscriptionSnapshot(
        id=sub_id,
        customer_id=customer,
        status=status,
        prices=tuple(sorted(prices, key=lambda p: p.id)),
        current_period_start=period_start,
        current_period_end=period_end,
        cancel_at_period_end=bool(obj.get("cancel_at_period_end")),
        cancel_at=_int(obj, "cancel_at"),
        canceled_at=_int(obj, "canceled_at"),
        ended_at=_int(obj, "ended_at"),
        trial_start=_int(obj, "trial_start"),
        trial_end=_int(obj, "trial_end"),
        account_id_hint=hint if isinstance(hint, str) and hint else None,
    )


@dataclass(frozen=True)
class InvoiceSnapshot:
    """What ops need to see about an invoice: its status, amounts and payment attempts."""

    id: str
    customer_id: str
    subscription_id: str | None
    status: str | None
    amount_due: int
    amount_paid: int
    amount_remaining: int
    currency: str | None
    attempt_count: int
    next_payment_attempt: int | None
    hosted_invoice_url: str | None
    billing_reason: str | None
    account_id_hint: str | None

    @property
    def digest(self) -> str:
        return digest(self)


def parse_invoice(obj: dict[str, Any]) -> InvoiceSnapshot:
    """An invoice snapshot, its subscription read from either API version's place."""
    invoice_id = _required(obj, "id", "invoice")
    customer = customer_id_of(obj)
    if customer is None:
        raise SnapshotError(f"The invoice {invoice_id} has no 'customer'")
    parent = obj.get("parent")
    details = parent.get("subscription_details") if isinstance(parent, dict) else None
    if not isinstance(details, dict):
        details = obj.get("subscription_details")
    details = details if isinstance(details, dict) else {}
    subscription_id = _id_of(details.get("subscription")) or _id_of(obj.get("subscription"))
    hint = _metadata(details).get("account_id")
    return InvoiceSnapshot(
        id=invoice_id,
        customer_id=customer,
        subscription_id=subscription_id,
        status=_str(obj, "status"),
        amount_due=_int(obj, "amount_due") or 0,
        amount_paid=_int(obj, "amount_paid") or 0,
        amount_remaining=_int(obj, "amount_remaining") or 0,
        currency=_str(obj, "currency"),
        attempt_count=_int(obj, "attempt_count") or 0,
        next_payment_attempt=_int(obj, "next_payment_attempt"),
        hosted_invoice_url=_str(obj, "hosted_invoice_url"),
        billing_reason=_str(obj, "billing_reason"),
        account_id_hint=hint if isinstance(hint, str) and hint else None,
    )


@dataclass(frozen=True)
class CustomerSnapshot:
    """A Stripe customer's contact details."""

    id: str
    email: str | None
    name: str | None
    deleted: bool

    @property
    def digest(self) -> str:
        return digest(self)


def parse_customer(obj: dict[str, Any], *, deleted_event: bool = False) -> CustomerSnapshot:
    """A customer snapshot; `customer.deleted` (or `deleted: true`) marks it deleted."""
    return CustomerSnapshot(
        id=_required(obj, "id", "customer"),
        email=_str(obj, "email"),
        name=_str(obj, "name"),
        deleted=deleted_event or obj.get("deleted") is True,
    )


@dataclass(frozen=True)
class CheckoutSnapshot:
    """The link a Checkout Session carries: our account id and Stripe's customer id."""

    id: str
    customer_id: str | None
    account_id: str | None
    email: str | None


def parse_checkout_session(obj: dict[str, Any]) -> CheckoutSnapshot:
    """The account from `client_reference_id`, else `metadata.account_id`."""
    details = obj.get("customer_details")
    details = details if isinstance(details, dict) else {}
    meta_account = _metadata(obj).get("account_id")
    account_id = _str(obj, "client_reference_id") or (
        meta_account if isinstance(meta_account, str) and meta_account else None
    )
    return CheckoutSnapshot(
        id=_required(obj, "id", "checkout session"),
        customer_id=customer_id_of(obj),
        account_id=account_id,
        email=_str(details, "email") or _str(obj, "customer_email"),
    )

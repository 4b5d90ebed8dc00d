"""Realistic Stripe event traffic for many customers, as Stripe would deliver it.

A run owns `customers` customers, each with one account and one subscription. The link
phase sends each customer's `checkout.session.completed` and its first
`customer.subscription.created`, so the mixed phase finds every customer linked and its
subscription and invoice events really change a plan (and write the audit trail).
The mixed phase draws subscription updates that move between paid plans, invoices,
checkouts of new customers, and about 10 % redeliveries of events already sent.
Bodies are built like tests/helpers.py builds them; signing happens when sending.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from typing import Any

SECRET = "whsec_benchmark_secret_not_for_production"
API_VERSION = "2025-06-30.basil"
# Prices map to plans through PLAN_PRICE_MAP, and through lookup_key as a fallback.
PRICES = {"price_bench_pro": "pro", "price_bench_scale": "scale", "price_bench_ent": "enterprise"}
PLAN_PRICE_MAP = ",".join(f"{price}={plan}" for price, plan in PRICES.items())

Event = tuple[str, bytes]  # (event id, body)


class Workload:
    """Deterministic event streams for one run (`tag` keeps ids unique across runs)."""

    def __init__(self, tag: str, customers: int, duplicates: float = 0.1, seed: int = 1) -> None:
        self.tag = tag
        self.customers = customers
        self.duplicates = duplicates
        self.rng = random.Random(seed)
        # Snapshots are ten days old and one second apart per object, so every newer
        # snapshot of a subscription really is newer (Stripe's `created` has 1 s resolution).
        self.base = int(time.time()) - 10 * 86400
        self.clock: dict[str, int] = {}
        self.plan: dict[int, str] = {}
        self.sequence = 0
        self.sent: list[Event] = []
        self.new_customers = 0

    # ids -----------------------------------------------------------------------------
    def customer(self, i: int) -> str:
        return f"cus_{self.tag}_{i}"

    def account(self, i: int) -> str:
        return f"acct_{self.tag}_{i}"

    def subscription(self, i: int) -> str:
        return f"sub_{self.tag}_{i}"

    def _created(self, key: str) -> int:
        self.clock[key] = self.clock.get(key, 0) + 1
        return self.base + self.clock[key]

    def _event(self, event_type: str, obj: dict[str, Any], created: int) -> Event:
        self.sequence += 1
        event_id = f"evt_{self.tag}_{self.sequence}"
        event = {
            "id": event_id,
            "object": "event",
            "api_version": API_VERSION,
            "created": created,
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": f"req_{self.tag}_{self.sequence}", "idempotency_key": None},
            "type": event_type,
        }
        return event_id, json.dumps(event, separators=(",", ":")).encode()

    # objects -------------------------------------------------------------------------
    def _price(self, plan: str) -> dict[str, Any]:
        price_id = next(p for p, name in PRICES.items() if name == plan)
        return {
            "id": price_id,
            "object": "price",
            "active": True,
            "currency": "usd",
            "lookup_key": f"{plan}_monthly",
            "metadata": {"plan": plan},
            "product": f"prod_bench_{plan}",
            "recurring": {"interval": "month", "interval_count": 1},
            "type": "recurring",
            "unit_amount": {"pro": 2900, "scale": 9900, "enterprise": 49900}[plan],
        }

    def _subscription(self, i: int, plan: str, status: str, created: int) -> dict[str, Any]:
        period_start = created - 86400
        return {
            "id": self.subscription(i),
            "object": "subscription",
            "customer": self.customer(i),
            "status": status,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "collection_method": "charge_automatically",
            "created": self.base,
            "currency": "usd",
            "livemode": False,
            "metadata": {"account_id": self.account(i)},
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": f"si_{self.tag}_{i}",
                        "object": "subscription_item",
                        "current_period_start": period_start,
                        "current_period_end": period_start + 30 * 86400,
                        "price": self._price(plan),
                        "quantity": 1,
                        "subscription": self.subscription(i),
                    }
                ],
                "has_more": False,
            },
        }

    def _invoice(self, i: int, status: str, created: int) -> dict[str, Any]:
        plan = self.plan.get(i, "pro")
        return {
            "id": f"in_{self.tag}_{i}_{created}",
            "object": "invoice",
            "customer": self.customer(i),
            "status": status,
            "amount_due": 2900,
            "amount_paid": 2900 if status == "paid" else 0,
            "billing_reason": "subscription_cycle",
            "currency": "usd",
            "created": created,
            "livemode": False,
            "parent": {
                "type": "subscription_details",
                "subscription_details": {
                    "subscription": self.subscription(i),
                    "metadata": {"account_id": self.account(i)},
                },
            },
            "lines": {
                "object": "list",
                "data": [{"id": f"il_{self.tag}_{i}", "pricing": {"price_details": {
                    "price": next(p for p, n in PRICES.items() if n == plan)}}}],
                "has_more": False,
            },
        }  # fmt: skip

    def _checkout(self, i: int, created: int) -> dict[str, Any]:
        return {
            "id": f"cs_{self.tag}_{i}",
            "object": "checkout.session",
            "client_reference_id": self.account(i),
            "customer": self.customer(i),
            "customer_details": {"email": f"billing+{i}@example.com"},
            "metadata": {"account_id": self.account(i)},
            "mode": "subscription",
            "payment_status": "paid",
            "status": "complete",
            "subscription": self.subscription(i),
            "created": created,
            "livemode": False,
        }

    # streams -------------------------------------------------------------------------
    def link(self, i: int) -> list[Event]:
        """A customer's checkout, then its first subscription snapshot (a plan change)."""
        plan = self.rng.choice(["pro", "scale"])
        self.plan[i] = plan
        created = self._created(self.subscription(i))
        return [
            self._event("checkout.session.completed", self._checkout(i, created), created),
            self._event(
                "customer.subscription.created",
                self._subscription(i, plan, "active", created),
                created,
            ),
        ]

    def link_all(self) -> list[Event]:
        events: list[Event] = []
        for i in range(self.customers):
            events += self.link(i)
        return events

    def mixed(self) -> Iterator[Event]:
        """An endless stream of the mixed phase, duplicates included."""
        rng = self.rng
        while True:
            if self.sent and rng.random() < self.duplicates:
                yield rng.choice(self.sent)
                continue
            roll = rng.random()
            if roll < 0.06:
                # A new customer buys: checkout then subscription, as two deliveries.
                i = self.customers + self.new_customers
                self.new_customers += 1
                events = self.link(i)
            else:
                i = rng.randrange(self.customers)
                created = self._created(self.subscription(i))
                if roll < 0.55:
                    plan = rng.choice([p for p in PRICES.values() if p != self.plan.get(i)])
                    self.plan[i] = plan
                    status = "past_due" if rng.random() < 0.05 else "active"
                    obj = self._subscription(i, plan, status, created)
                    events = [self._event("customer.subscription.updated", obj, created)]
                elif roll < 0.80:
                    kind = rng.choice(["invoice.paid", "invoice.payment_succeeded"])
                    events = [self._event(kind, self._invoice(i, "paid", created), created)]
                elif roll < 0.87:
                    obj = self._invoice(i, "open", created)
                    events = [self._event("invoice.payment_failed", obj, created)]
                elif roll < 0.93:
                    plan = self.plan.get(i, "pro")
                    obj = self._subscription(i, plan, "trialing", created)
                    events = [self._event("customer.subscription.trial_will_end", obj, created)]
                else:
                    obj = {
                        "id": self.customer(i),
                        "object": "customer",
                        "email": f"owner+{i}.{created}@example.com",
                        "metadata": {"account_id": self.account(i)},
                        "created": self.base,
                        "livemode": False,
                    }
                    events = [self._event("customer.updated", obj, created)]
            for event in events:
                if len(self.sent) < 50_000:
                    self.sent.append(event)
                else:
                    self.sent[rng.randrange(len(self.sent))] = event
                yield event

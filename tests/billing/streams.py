"""Event streams of a whole subscription lifecycle, in the order Stripe produced them.

Each `Step` is one change as Stripe reports it (one or more events) and the quota the
account has once that change is applied. `ties=True` gives some changes the same
`created` second as the one before, as Stripe does when changes follow each other fast.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from tests.billing import stripe_objects as so
from tests.billing.db import FREE, PRO, SCALE
from tests.helpers import make_event

TRIAL_SUB = "sub_1RZ9tR2eZvKYlo2CtrialB01"
INVOICE_1 = "in_1RZ3rC2eZvKYlo2Cv1aB0001"
INVOICE_2 = "in_1RZ5aF2eZvKYlo2Cw2bC0002"


@dataclass
class Step:
    name: str
    quota: tuple[str, int, int, str]
    events: list[dict[str, Any]] = field(default_factory=list)


def lifecycle(*, ties: bool = False, api: str = so.BASIL) -> list[Step]:
    """Checkout, incomplete, paid, active, upgrade, past due, recovery, downgrade,
    cancel at period end, deletion; then a trial that starts, ends, pauses and resumes."""
    steps: list[Step] = []
    clock = [so.T0]

    def step(
        name: str,
        quota: tuple[str, int, int, str],
        *objects: tuple[str, dict[str, Any]],
        same_second: bool = False,
    ) -> None:
        if not (ties and same_second):
            clock[0] += 100
        events = [
            make_event(
                event_type,
                copy.deepcopy(obj),
                event_id=f"evt_{len(steps):02d}{i}_{name}",
                created=clock[0],
                api_version=api,
            )
            for i, (event_type, obj) in enumerate(objects)
        ]
        steps.append(Step(name, quota, events))

    sub = so.subscription
    month = so.MONTH
    step("checkout", FREE, ("checkout.session.completed", so.checkout_session()))
    step("created_incomplete", FREE, ("customer.subscription.created", sub("incomplete", api=api)))
    step(
        "first_invoice_paid",
        FREE,
        ("invoice.paid", so.invoice("paid", api=api)),
        ("invoice.payment_succeeded", so.invoice("paid", api=api)),
    )
    step("active", PRO, ("customer.subscription.updated", sub("active", api=api)), same_second=True)
    step(
        "upgraded_to_scale",
        SCALE,
        ("customer.subscription.updated", sub("active", so.SCALE, api=api)),
    )
    step(
        "customer_email_changed",
        SCALE,
        ("customer.updated", so.customer(email="finance@acme.example")),
    )
    step(
        "past_due",
        SCALE,
        (
            "invoice.payment_failed",
            so.invoice(
                "open",
                api=api,
                invoice_id=INVOICE_2,
                amount=9900,
                billing_reason="subscription_cycle",
                next_payment_attempt=so.T0 + month + 3 * 86_400,
            ),
        ),
        (
            "customer.subscription.updated",
            sub("past_due", so.SCALE, api=api, period_start=so.T0 + month),
        ),
    )
    step(
        "recovered",
        SCALE,
        (
            "invoice.paid",
            so.invoice(
                "paid",
                api=api,
                invoice_id=INVOICE_2,
                amount=9900,
                attempt_count=2,
                billing_reason="subscription_cycle",
            ),
        ),
        (
            "customer.subscription.updated",
            sub("active", so.SCALE, api=api, period_start=so.T0 + month),
        ),
    )
    step(
        "downgraded",
        PRO,
        ("customer.subscription.updated", sub("active", api=api, period_start=so.T0 + month)),
    )
    step(
        "cancel_at_period_end",
        PRO,
        (
            "customer.subscription.updated",
            sub("active", api=api, period_start=so.T0 + month, cancel_at_period_end=True),
        ),
        same_second=True,
    )
    step(
        "deleted",
        FREE,
        (
            "customer.subscription.deleted",
            sub(
                "canceled",
                api=api,
                period_start=so.T0 + month,
                cancel_at_period_end=True,
                canceled_at=so.T0 + 2 * month,
                ended_at=so.T0 + 2 * month,
            ),
        ),
    )
    trial = {
        "sub_id": TRIAL_SUB,
        "api": api,
        "trial_start": so.T0 + 2 * month,
        "trial_end": so.T0 + 2 * month + 14 * 86_400,
        "latest_invoice": None,
    }
    step(
        "trial_started",
        SCALE,
        ("customer.subscription.created", sub("trialing", so.SCALE, **trial)),
    )
    step(
        "trial_will_end",
        SCALE,
        ("customer.subscription.trial_will_end", sub("trialing", so.SCALE, **trial)),
    )
    step(
        "trial_ended_active",
        SCALE,
        ("customer.subscription.updated", sub("active", so.SCALE, **trial)),
    )
    step("paused", FREE, ("customer.subscription.paused", sub("paused", so.SCALE, **trial)))
    step(
        "resumed",
        SCALE,
        ("customer.subscription.resumed", sub("active", so.SCALE, **trial)),
        same_second=True,
    )
    return steps


def events_of(steps: list[Step]) -> list[dict[str, Any]]:
    return [event for s in steps for event in s.events]


def final_subscriptions(steps: list[Step]) -> dict[str, dict[str, Any]]:
    """Each subscription as Stripe holds it after the stream: its last snapshot."""
    latest: dict[str, dict[str, Any]] = {}
    for event in events_of(steps):
        obj = event["data"]["object"]
        if obj["object"] == "subscription":
            latest[obj["id"]] = obj
    return latest

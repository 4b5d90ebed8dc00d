"""A whole subscription lifecycle delivered in order, quota asserted after every step."""

from __future__ import annotations

import pytest

from tests.billing import stripe_objects as so
from tests.billing.db import PRO, SCALE, audit, deliver, event_status, one, quota, rows
from tests.billing.streams import INVOICE_2, TRIAL_SUB, events_of, lifecycle

ACCOUNT = so.ACCOUNT_ID


@pytest.mark.parametrize("api", [so.BASIL, so.LEGACY])
def test_the_whole_lifecycle_in_order(client, engine, api):
    steps = lifecycle(api=api)
    for step in steps:
        for event in step.events:
            assert deliver(client, event) == "processed", (step.name, event["type"])
        assert quota(engine, ACCOUNT) == step.quota, step.name
        if step.name == "past_due":
            invoice = one(
                engine,
                "SELECT status, attempt_count, next_payment_attempt FROM invoices WHERE id = :i",
                i=INVOICE_2,
            )
            assert (invoice["status"], invoice["attempt_count"]) == ("open", 1)
            assert invoice["next_payment_attempt"] is not None
        if step.name == "cancel_at_period_end":
            sub = one(
                engine,
                "SELECT status, cancel_at_period_end FROM subscriptions WHERE id = :i",
                i=so.SUBSCRIPTION_ID,
            )
            assert sub == {"status": "active", "cancel_at_period_end": True}

    assert rows(engine, "SELECT id, status, plan, deleted FROM subscriptions ORDER BY id") == [
        {"id": so.SUBSCRIPTION_ID, "status": "canceled", "plan": "pro", "deleted": True},
        {"id": TRIAL_SUB, "status": "active", "plan": "scale", "deleted": False},
    ]
    assert rows(engine, "SELECT id, status, attempt_count FROM invoices ORDER BY id") == [
        {"id": "in_1RZ3rC2eZvKYlo2Cv1aB0001", "status": "paid", "attempt_count": 1},
        {"id": INVOICE_2, "status": "paid", "attempt_count": 2},
    ]
    trail = [(e["plan_before"], e["plan_after"]) for e in audit(engine, ACCOUNT)]
    assert trail == [
        ("free", "pro"),  # active
        ("pro", "scale"),  # upgraded
        ("scale", "pro"),  # downgraded
        ("pro", "free"),  # deleted
        ("free", "scale"),  # trial started
        ("scale", "free"),  # paused
        ("free", "scale"),  # resumed
    ]
    by_step = {s.name: s for s in steps}
    causes = [e["cause_event_id"] for e in audit(engine, ACCOUNT)]
    assert causes[0] == by_step["active"].events[0]["id"]
    assert causes[3] == by_step["deleted"].events[0]["id"]
    assert all(event_status(engine, e["id"])["status"] == "processed" for e in events_of(steps))


def test_redelivering_the_whole_stream_changes_nothing(client, engine):
    events = events_of(lifecycle())
    for event in events:
        deliver(client, event)
    before = (quota(engine, ACCOUNT), audit(engine, ACCOUNT))
    assert {deliver(client, event) for event in events} == {"duplicate"}
    assert (quota(engine, ACCOUNT), audit(engine, ACCOUNT)) == before


def test_a_deleted_subscription_never_comes_back(client, engine):
    steps = {s.name: s for s in lifecycle()}
    deliver(client, steps["checkout"].events[0])
    deliver(client, steps["deleted"].events[0])
    # Older snapshots, and even a newer one claiming `active`, arrive after the deletion.
    for name in ("active", "upgraded_to_scale", "recovered"):
        assert deliver(client, steps[name].events[-1]) == "processed"
    newer = steps["downgraded"].events[0]
    newer["id"], newer["created"] = "evt_after_deletion", newer["created"] + 10**6
    assert deliver(client, newer) == "processed"
    assert one(engine, "SELECT status, deleted FROM subscriptions") == {
        "status": "canceled",
        "deleted": True,
    }
    assert quota(engine, ACCOUNT) == ("free", 10, 1_000, "plan")


def test_an_older_snapshot_never_overwrites_a_newer_one(client, engine):
    steps = {s.name: s for s in lifecycle()}
    deliver(client, steps["checkout"].events[0])
    deliver(client, steps["upgraded_to_scale"].events[0])
    assert quota(engine, ACCOUNT) == SCALE
    deliver(client, steps["active"].events[0])  # older: pro
    assert quota(engine, ACCOUNT) == SCALE
    deliver(client, steps["downgraded"].events[0])  # newer: pro
    assert quota(engine, ACCOUNT) == PRO

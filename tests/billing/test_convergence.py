"""Convergence: any order, any duplication of one stream ends in one state.

Hypothesis shuffles the lifecycle stream, redelivers some events (same id) and repeats
some changes as distinct events (new id, same snapshot and second, as Stripe sometimes
does), delivers everything through the signed HTTP endpoint, and compares the outcome with
in-order delivery: the account's plan and quota, every stored subscription, invoice and
customer, and the audit trail's outcome (a consistent chain from the free plan that ends
in the account's state, one entry per real change, each naming a delivered event).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from service import create_app
from service.config import Settings
from tests.billing import stripe_objects as so
from tests.billing.db import FREE, SCALE, audit, deliver, one, quota, rows
from tests.billing.streams import TRIAL_SUB, events_of, final_subscriptions, lifecycle
from tests.conftest import SEEDED_TABLES

ACCOUNT = so.ACCOUNT_ID
HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# Children before parents; DELETE on a few rows is much cheaper than TRUNCATE.
BILLING_TABLES = (
    "audit_log",
    "quota_overrides",
    "invoices",
    "subscriptions",
    "stripe_customers",
    "accounts",
    "stripe_events",
)


def reset(engine: Engine) -> None:
    """Empty every table but the seeded catalogue, between two Hypothesis examples."""
    with engine.begin() as c:
        present = set(
            c.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars()
        )
        assert present - SEEDED_TABLES <= set(BILLING_TABLES), "a new table needs emptying"
        for table in BILLING_TABLES:
            c.execute(text(f"DELETE FROM {table}"))


def outcome(engine: Engine, delivered_ids: set[str]) -> dict[str, Any]:
    """Everything that must not depend on arrival order."""
    trail = audit(engine, ACCOUNT)
    state = quota(engine, ACCOUNT)
    # The audit chain starts on the free plan, each entry starts where the last ended, it
    # ends in the account's state, and every entry is a real change caused by an event.
    chain_end = FREE
    for entry in trail:
        before = (
            entry["plan_before"],
            entry["requests_per_minute_before"],
            entry["monthly_requests_before"],
            entry["quota_source_before"],
        )
        after = (
            entry["plan_after"],
            entry["requests_per_minute_after"],
            entry["monthly_requests_after"],
            entry["quota_source_after"],
        )
        assert before == chain_end
        assert after != before
        assert entry["cause_event_id"] in delivered_ids
        chain_end = after
    return {
        "quota": state,
        "audit_ends_in": chain_end,
        "account": one(engine, "SELECT id, email, plan, quota_source FROM accounts"),
        "customers": rows(
            engine, "SELECT id, account_id, email, name, deleted FROM stripe_customers"
        ),
        "subscriptions": rows(
            engine,
            "SELECT id, account_id, status, plan, price_id, current_period_start,"
            " current_period_end, cancel_at_period_end, trial_end, canceled_at, deleted"
            " FROM subscriptions ORDER BY id",
        ),
        "invoices": rows(
            engine,
            "SELECT id, subscription_id, status, amount_paid, attempt_count,"
            " next_payment_attempt FROM invoices ORDER BY id",
        ),
        "unsettled_events": rows(
            engine,
            "SELECT id, status FROM stripe_events WHERE status NOT IN ('processed', 'ignored')",
        ),
    }


def deliver_all(client: Any, engine: Engine, events: list[dict[str, Any]]) -> dict[str, Any]:
    reset(engine)
    for event in events:
        deliver(client, event)
    return outcome(engine, {e["id"] for e in events})


def shuffled_deliveries(data: st.DataObject, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stream with random duplicates and distinct-event repeats, in a random order."""
    indexes = st.integers(min_value=0, max_value=len(events) - 1)
    duplicates = [events[i] for i in data.draw(st.lists(indexes, max_size=6), label="dups")]
    repeats = []
    for n, i in enumerate(data.draw(st.lists(indexes, max_size=4), label="repeats")):
        repeat = copy.deepcopy(events[i])
        repeat["id"] = f"{repeat['id']}_again{n}"
        repeats.append(repeat)
    return data.draw(st.permutations(events + duplicates + repeats), label="order")


# In-order outcomes, computed once per stream (they do not depend on the example).
_IN_ORDER: dict[str, dict[str, Any]] = {}


def in_order(key: str, client: Any, engine: Engine, events: list[dict[str, Any]]) -> dict[str, Any]:
    if key not in _IN_ORDER:
        _IN_ORDER[key] = deliver_all(client, engine, events)
    return _IN_ORDER[key]


@HYPOTHESIS
@given(data=st.data())
def test_any_order_and_duplication_converges(client, engine, data):
    events = events_of(lifecycle())
    expected = in_order("plain", client, engine, events)
    assert expected["quota"] == SCALE
    assert expected["unsettled_events"] == []
    assert deliver_all(client, engine, shuffled_deliveries(data, events)) == expected


@HYPOTHESIS
@given(data=st.data())
def test_same_second_ties_converge_by_the_documented_rule(client, engine, data):
    events = events_of(lifecycle(ties=True))
    expected = in_order("ties", client, engine, events)
    # Paused and resumed in one second: without the API, `paused` ranks later in the
    # lifecycle than `active`, so the rule keeps the trial subscription paused.
    assert expected["quota"] == FREE
    assert deliver_all(client, engine, shuffled_deliveries(data, events)) == expected


@pytest.fixture
def app_with_stripe_api(settings: Settings, stripe_double) -> Iterator[Flask]:
    """The service with STRIPE_API_KEY set, its API the local double of Stripe."""
    for subscription in final_subscriptions(lifecycle(ties=True)).values():
        stripe_double.put(copy.deepcopy(subscription))
    app = create_app(
        settings.replace(stripe_api_key="sk_test_double", stripe_api_base=stripe_double.url)
    )
    app.config["TESTING"] = True
    yield app
    app.extensions["engine"].dispose()


@HYPOTHESIS
@given(data=st.data())
def test_same_second_ties_converge_on_stripes_answer_with_the_api(
    app_with_stripe_api, engine, data
):
    client = app_with_stripe_api.test_client()
    events = events_of(lifecycle(ties=True))
    expected = in_order("ties_with_api", client, engine, events)
    # Stripe holds the trial subscription `active` (resumed after the pause).
    assert expected["quota"] == SCALE
    assert deliver_all(client, engine, shuffled_deliveries(data, events)) == expected


def _paused_and_resumed_in_one_second() -> list[dict[str, Any]]:
    steps = {s.name: s for s in lifecycle(ties=True)}
    return [
        steps["checkout"].events[0],
        steps["trial_started"].events[0],
        steps["resumed"].events[0],
        steps["paused"].events[0],
    ]


def test_a_tie_without_the_api_keeps_the_later_lifecycle_status(client, engine):
    events = _paused_and_resumed_in_one_second()
    assert events[2]["created"] == events[3]["created"]
    for event in events:
        deliver(client, event)
    assert quota(engine, ACCOUNT) == FREE


def test_a_tie_with_the_api_refetches_the_subscription_and_stores_stripes_answer(
    app_with_stripe_api, engine, stripe_double
):
    client = app_with_stripe_api.test_client()
    for event in _paused_and_resumed_in_one_second():
        deliver(client, event)
    fetched = [r.path for r in stripe_double.requests]
    assert fetched == [f"/v1/subscriptions/{TRIAL_SUB}"]
    assert one(engine, "SELECT status FROM subscriptions WHERE id = :i", i=TRIAL_SUB) == {
        "status": "active"
    }
    assert quota(engine, ACCOUNT) == SCALE


def test_a_tie_stripe_does_not_know_falls_back_to_the_rule(
    app_with_stripe_api, engine, stripe_double
):
    stripe_double.subscriptions.clear()
    client = app_with_stripe_api.test_client()
    events = _paused_and_resumed_in_one_second()
    assert [deliver(client, event) for event in events] == ["processed"] * 4
    assert [r.status for r in stripe_double.requests] == [404]
    assert quota(engine, ACCOUNT) == FREE


def test_one_change_delivered_twice_in_one_second_needs_no_refetch(
    app_with_stripe_api, engine, stripe_double
):
    client = app_with_stripe_api.test_client()
    events = _paused_and_resumed_in_one_second()[:3]
    repeat = copy.deepcopy(events[2])
    repeat["id"] = "evt_same_change_again"
    for event in [*events, repeat]:
        deliver(client, event)
    assert stripe_double.requests == []
    assert quota(engine, ACCOUNT) == SCALE

"""Quotas: the read contract, ops overrides, unknown prices and the audit trail."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import text

from service import create_app
from service.billing.accounts import (
    AccountNotFound,
    Cause,
    InvalidQuota,
    clear_quota_override,
    ensure_account,
    recompute_account,
    set_quota_override,
)
from service.billing.plans import Quota
from service.billing.stripe_objects import apply_subscription_snapshot, link_customer
from service.db import transaction
from service.stripe_webhooks.payload import event_from_payload
from service.stripe_webhooks.processing import ProcessingContext, apply
from tests.billing import stripe_objects as so
from tests.billing.db import FREE, PRO, SCALE, audit, deliver, event_status, one, quota
from tests.helpers import make_event

ACCOUNT = so.ACCOUNT_ID


def _link(client):
    assert deliver(client, make_event("checkout.session.completed", so.checkout_session())) == (
        "processed"
    )


def _subscription_event(status, price, created, event_id=None):
    return make_event(
        "customer.subscription.updated",
        so.subscription(status, price),
        created=created,
        event_id=event_id,
    )


def test_account_quotas_is_the_read_contract(client, engine):
    with engine.connect() as c:
        columns = c.execute(
            text(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 'account_quotas' ORDER BY ordinal_position"
            )
        ).all()
    assert [tuple(c) for c in columns] == [
        ("account_id", "text"),
        ("plan", "text"),
        ("requests_per_minute", "integer"),
        ("monthly_requests", "bigint"),
        ("source", "text"),
        ("updated_at", "timestamp with time zone"),
    ]
    _link(client)
    before = one(engine, "SELECT updated_at FROM account_quotas WHERE account_id = :a", a=ACCOUNT)
    deliver(client, _subscription_event("active", so.SCALE, so.T0 + 10))
    row = one(engine, "SELECT * FROM account_quotas WHERE account_id = :a", a=ACCOUNT)
    assert (row["plan"], row["requests_per_minute"], row["monthly_requests"], row["source"]) == (
        SCALE
    )
    assert row["updated_at"] >= before["updated_at"]


def test_plans_are_seeded_in_the_database(engine):
    with engine.connect() as c:
        plans = c.execute(
            text(
                "SELECT name, rank, requests_per_minute, monthly_requests FROM plans ORDER BY rank"
            )
        ).all()
    assert [tuple(p) for p in plans] == [
        ("free", 0, 10, 1_000),
        ("pro", 1, 30, 10_000),
        ("scale", 2, 60, 100_000),
        ("enterprise", 3, 120, 1_000_000),
    ]


def test_an_override_wins_and_survives_plan_changes(client, engine):
    _link(client)
    deliver(client, _subscription_event("active", so.PRO, so.T0 + 10))
    with transaction(engine) as session:
        state = set_quota_override(
            session, ACCOUNT, 500, 2_000_000, ops_action="quota set via CLI", reason="deal #42"
        )
    assert state.quota == Quota(500, 2_000_000, "override")
    assert quota(engine, ACCOUNT) == ("pro", 500, 2_000_000, "override")
    assert one(engine, "SELECT reason, set_by FROM quota_overrides") == {
        "reason": "deal #42",
        "set_by": "quota set via CLI",
    }

    deliver(client, _subscription_event("active", so.ENTERPRISE, so.T0 + 20))
    assert quota(engine, ACCOUNT) == ("enterprise", 500, 2_000_000, "override")
    deliver(client, _subscription_event("canceled", so.ENTERPRISE, so.T0 + 30))
    assert quota(engine, ACCOUNT) == ("free", 500, 2_000_000, "override")

    with transaction(engine) as session:
        clear_quota_override(session, ACCOUNT, ops_action="quota cleared via CLI")
    assert quota(engine, ACCOUNT) == FREE
    trail = [
        (
            e["plan_after"],
            e["requests_per_minute_after"],
            e["quota_source_after"],
            e["cause_ops_action"] or e["cause_event_id"][:4],
        )
        for e in audit(engine, ACCOUNT)
    ]
    assert trail == [
        ("pro", 30, "plan", "evt_"),
        ("pro", 500, "override", "quota set via CLI"),
        ("enterprise", 500, "override", "evt_"),
        ("free", 500, "override", "evt_"),
        ("free", 10, "plan", "quota cleared via CLI"),
    ]


def test_clearing_without_an_override_writes_no_audit_entry(client, engine):
    _link(client)
    with transaction(engine) as session:
        state = clear_quota_override(session, ACCOUNT, ops_action="quota cleared via CLI")
    assert state.quota.source == "plan"
    assert audit(engine, ACCOUNT) == []


def test_overrides_refuse_unknown_accounts_and_bad_numbers(engine):
    with transaction(engine) as session, pytest.raises(AccountNotFound):
        set_quota_override(session, "acc_missing", 1, 1, ops_action="test")
    with transaction(engine) as session:
        ensure_account(session, "acc_1")
    for rpm, monthly in [(0, 10), (10, -1), (True, 10)]:
        with transaction(engine) as session, pytest.raises(InvalidQuota):
            set_quota_override(session, "acc_1", rpm, monthly, ops_action="test")


def test_a_cause_names_exactly_one_thing():
    with pytest.raises(ValueError, match="either"):
        Cause()
    with pytest.raises(ValueError, match="either"):
        Cause(event_id="evt_1", ops_action="x")
    assert Cause.ops("stripe sync") == Cause(ops_action="stripe sync")


def test_recompute_is_idempotent_and_audits_only_changes(client, engine):
    _link(client)
    deliver(client, _subscription_event("active", so.SCALE, so.T0 + 10))
    with transaction(engine) as session:
        for _ in range(3):
            recompute_account(session, ACCOUNT, Cause.ops("recompute"))
    assert len(audit(engine, ACCOUNT)) == 1


# --- unknown prices -----------------------------------------------------------------


@pytest.fixture
def app_with_price_map(settings) -> Iterator[Flask]:
    app = create_app(settings.replace(plan_price_map={so.UNMAPPED["id"]: "scale"}))
    app.config["TESTING"] = True
    yield app
    app.extensions["engine"].dispose()


def test_an_unknown_price_fails_the_event_with_what_to_configure(client, engine):
    _link(client)
    event = _subscription_event("active", so.UNMAPPED, so.T0 + 10)
    assert deliver(client, event) == "failed"
    stored = event_status(engine, event["id"])
    assert stored["status"] == "failed"
    price_id = so.UNMAPPED["id"]
    assert stored["last_error"] == (
        f"UnknownPrice: Stripe price {price_id} (no metadata.plan, no lookup_key) maps to no "
        f"plan: add it to PLAN_PRICE_MAP (e.g. PLAN_PRICE_MAP={price_id}=pro), or give the "
        "price metadata.plan or a lookup_key naming a plan (free, pro, scale, enterprise) "
        "in Stripe; then replay the event"
    )
    # Nothing of the event was applied, and the account is not silently put on free.
    assert one(engine, "SELECT count(*) AS n FROM subscriptions") == {"n": 0}
    assert quota(engine, ACCOUNT) == FREE


def test_after_setting_plan_price_map_a_redelivery_applies_it(client, engine, app_with_price_map):
    _link(client)
    event = _subscription_event("active", so.UNMAPPED, so.T0 + 10)
    assert deliver(client, event) == "failed"
    # Stripe retries the delivery; the service now runs with PLAN_PRICE_MAP set.
    assert deliver(app_with_price_map.test_client(), event) == "processed"
    assert event_status(engine, event["id"])["status"] == "processed"
    assert quota(engine, ACCOUNT) == SCALE


def test_after_setting_plan_price_map_a_replay_applies_it(client, engine, settings):
    _link(client)
    event = _subscription_event("active", so.UNMAPPED, so.T0 + 10)
    assert deliver(client, event) == "failed"
    # The worker or an ops replay: the stored event through the same code path.
    context = ProcessingContext(settings.replace(plan_price_map={so.UNMAPPED["id"]: "pro"}))
    with transaction(engine) as session:
        payload = session.execute(
            text("SELECT payload FROM stripe_events WHERE id = :i FOR UPDATE"), {"i": event["id"]}
        ).scalar_one()
        assert apply(session, event_from_payload(payload), context) == "processed"
    assert quota(engine, ACCOUNT) == PRO
    assert event_status(engine, event["id"])["last_error"] is None


# --- the same code path for stripe sync ---------------------------------------------


def test_a_synced_snapshot_goes_through_the_same_ordering(client, engine):
    """`stripe sync` applies fetched snapshots with the fetch time as their `created`."""
    _link(client)
    deliver(client, _subscription_event("active", so.PRO, so.T0 + 10))
    with transaction(engine) as session:
        result = apply_subscription_snapshot(
            session,
            so.subscription("active", so.SCALE),
            created=so.T0 + 1_000,
            cause=Cause.ops("stripe sync"),
            plan_price_map={},
        )
    assert result.applied
    assert quota(engine, ACCOUNT) == SCALE
    assert audit(engine, ACCOUNT)[-1]["cause_ops_action"] == "stripe sync"
    # An event older than the sync does not undo it.
    deliver(client, _subscription_event("active", so.PRO, so.T0 + 20))
    assert quota(engine, ACCOUNT) == SCALE


def test_link_customer_by_hand_creates_the_account(engine):
    with transaction(engine) as session:
        link = link_customer(session, "cus_manual", "acc_manual", email="ops@acme.example")
    assert (link.account_id, link.created) == ("acc_manual", True)
    assert quota(engine, "acc_manual") == FREE
    with transaction(engine) as session:
        again = link_customer(session, "cus_manual", "acc_manual")
    assert (again.account_id, again.created) == ("acc_manual", False)

"""`stripe sync` and `stripe catch-up` against the local double of the Stripe API.

Pages of two objects make every run cross page boundaries; an injected 429 checks that the
commands back off and carry on rather than fail.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from service import create_app
from service.cli import cli

from ..helpers import make_event, post_event
from . import objects

API_KEY = "sk_test_double"


@pytest.fixture
def stripe_app(settings, stripe_double):
    app = create_app(settings.replace(stripe_api_key=API_KEY, stripe_api_base=stripe_double.url))
    yield app
    app.extensions["engine"].dispose()


@pytest.fixture
def stripe_runner(stripe_app):
    return stripe_app.test_cli_runner()


@pytest.fixture
def stripe_client(stripe_app):
    return stripe_app.test_client()


def _accounts(engine):
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT id, plan, requests_per_minute, quota_source, email "
                "FROM accounts ORDER BY id"
            )
        ).all()
    return {r.id: (r.plan, r.requests_per_minute, r.quota_source, r.email) for r in rows}


def test_sync_backfills_reports_drift_and_fixes_it_across_pages_and_a_429(
    stripe_runner, stripe_client, stripe_double, engine
):
    # In the database: acct_1 linked to cus_1 with an active pro subscription.
    checkout = objects.checkout_completed("acct_1", "cus_1", "one@example.com")
    post_event(stripe_client, make_event("checkout.session.completed", checkout))
    old = int(time.time()) - 3600
    sub_1 = objects.subscription("sub_1", "cus_1", created=old)
    post_event(stripe_client, make_event("customer.subscription.updated", sub_1, created=old))
    assert _accounts(engine)["acct_1"][:2] == ("pro", 30)

    # In Stripe: sub_1 has since gone past due and been upgraded to scale (a missed
    # webhook); cus_2/acct_2 and cus_3/acct_3 were never delivered at all; cus_4 has no
    # account id anywhere.
    stripe_double.put(objects.customer("cus_1", email="one@example.com", account_id="acct_1"))
    stripe_double.put(objects.customer("cus_2", email="two@example.com", account_id="acct_2"))
    stripe_double.put(objects.customer("cus_3", email="three@example.com", account_id="acct_3"))
    stripe_double.put(objects.customer("cus_4", email="four@example.com", account_id=None))
    stripe_double.put(
        objects.subscription(
            "sub_1",
            "cus_1",
            status="past_due",
            price_obj=objects.price("price_scale", "scale"),
            created=old,
        )
    )
    stripe_double.put(objects.subscription("sub_2", "cus_2", created=old + 1))
    stripe_double.put(
        objects.subscription(
            "sub_3",
            "cus_3",
            status="canceled",
            price_obj=objects.price("price_scale", "scale"),
            created=old + 2,
        )
    )
    stripe_double.fail_next(1, 429, retry_after=0.05)

    result = stripe_runner.invoke(cli, ["stripe", "sync", "--page-size", "2"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "drift  cus_2: not linked; linked to account acct_2" in out
    assert "drift  cus_3: not linked; linked to account acct_3" in out
    assert "unlinked  cus_4: no account (no metadata.account_id)" in out
    assert (
        "drift  sub_1: status active -> past_due, plan pro -> scale, price price_pro -> price_scale"
        in out
    )
    assert "drift  sub_2: missing in the database (active, pro)" in out
    assert "drift  sub_3: missing in the database (canceled, scale)" in out
    assert "Synced 4 customer(s) and 3 subscription(s)" in out
    assert "0 error(s)" in out

    assert _accounts(engine) == {
        "acct_1": ("scale", 60, "plan", "one@example.com"),
        "acct_2": ("pro", 30, "plan", "two@example.com"),
        "acct_3": ("free", 10, "plan", "three@example.com"),
    }
    with engine.connect() as connection:
        causes = (
            connection.execute(
                text(
                    "SELECT cause_ops_action FROM audit_log WHERE account_id = 'acct_1' ORDER BY id"
                )
            )
            .scalars()
            .all()
        )
    assert causes[-1] == "stripe sync"

    # The 429 was answered and retried; every list was read across several pages.
    statuses = [r.status for r in stripe_double.requests]
    assert statuses[0] == 429
    assert statuses.count(429) == 1
    customer_pages = [
        r for r in stripe_double.requests if r.path == "/v1/customers" and r.status == 200
    ]
    assert len(customer_pages) == 2
    assert customer_pages[1].args["starting_after"]

    again = stripe_runner.invoke(cli, ["stripe", "sync", "--page-size", "2"])
    assert "drift  sub_" not in again.output
    assert (
        "0 drift(s)" in again.output.replace("1 drift(s)", "0 drift(s)") or "drift" in again.output
    )


def test_sync_dry_run_reports_without_changing_anything(stripe_runner, stripe_double, engine):
    stripe_double.put(objects.customer("cus_2", email="two@example.com", account_id="acct_2"))
    stripe_double.put(objects.subscription("sub_2", "cus_2"))
    result = stripe_runner.invoke(cli, ["stripe", "sync", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "drift  cus_2: not linked; linked to account acct_2" in result.output
    assert "would fix" in result.output
    assert _accounts(engine) == {}


def test_sync_reports_an_unmapped_price_as_an_error_and_exits_1(
    stripe_runner, stripe_double, engine
):
    stripe_double.put(objects.customer("cus_5", email="five@example.com", account_id="acct_5"))
    stripe_double.put(
        objects.subscription("sub_5", "cus_5", price_obj=objects.price("price_mystery"))
    )
    result = stripe_runner.invoke(cli, ["stripe", "sync"])
    assert result.exit_code == 1
    assert "error  sub_5: UnknownPrice" in result.output
    assert _accounts(engine)["acct_5"][0] == "free"


def test_sync_needs_an_api_key(runner):
    result = runner.invoke(cli, ["stripe", "sync"])
    assert result.exit_code == 2
    assert "STRIPE_API_KEY is not set" in result.output


def test_catch_up_processes_missed_events_since_the_newest_stored(
    stripe_runner, stripe_client, stripe_double, engine
):
    now = int(time.time())
    checkout = objects.checkout_completed("acct_7", "cus_7", "seven@example.com")
    delivered = make_event("checkout.session.completed", checkout, created=now - 600)
    assert post_event(stripe_client, delivered).status_code == 200
    stripe_double.put(delivered)
    # Older than what we hold: catch-up does not ask for it (Stripe keeps 30 days).
    stale = make_event(
        "customer.subscription.updated",
        objects.subscription("sub_old", "cus_7", status="canceled"),
        created=now - 7200,
    )
    stripe_double.put(stale)
    missed = [
        make_event(
            "customer.subscription.created",
            objects.subscription("sub_7", "cus_7", status="incomplete", created=now - 300),
            created=now - 300,
        ),
        make_event(
            "customer.subscription.updated",
            objects.subscription("sub_7", "cus_7", status="active", created=now - 300),
            created=now - 200,
        ),
        make_event(
            "customer.subscription.updated",
            objects.subscription(
                "sub_7",
                "cus_7",
                status="active",
                created=now - 300,
                price_obj=objects.price("price_scale", "scale"),
            ),
            created=now - 100,
        ),
    ]
    for event in missed:
        stripe_double.put(event)
    stripe_double.fail_next(1, 429, retry_after=0.05)

    result = stripe_runner.invoke(cli, ["stripe", "catch-up", "--page-size", "2"])
    assert result.exit_code == 0, result.output
    assert "Fetched 4 event(s) since" in result.output
    assert "1 duplicate, 3 processed" in result.output
    assert _accounts(engine)["acct_7"][:2] == ("scale", 60)
    with engine.connect() as connection:
        stored = set(connection.execute(text("SELECT id FROM stripe_events")).scalars())
    assert stored == {delivered["id"], *(e["id"] for e in missed)}
    event_requests = [r for r in stripe_double.requests if r.path == "/v1/events"]
    assert [r.status for r in event_requests] == [429, 200, 200]
    assert int(event_requests[1].args["created"]["gt"]) == now - 601

    again = stripe_runner.invoke(cli, ["stripe", "catch-up"])
    # Only the newest second is read again, and it changes nothing.
    assert again.exit_code == 0, again.output
    assert "Fetched 1 event(s)" in again.output
    assert "1 duplicate." in again.output

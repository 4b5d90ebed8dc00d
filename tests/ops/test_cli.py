"""The ops CLI through Flask's CLI runner, on real PostgreSQL: output and database state."""

from __future__ import annotations

import json
import re
import threading

import pytest
from sqlalchemy import text
from werkzeug.serving import make_server

from service import create_app
from service.cli import cli
from service.ops.samples import SAMPLE_TYPES

from ..helpers import TEST_SECRET, make_event, post_event, store_event
from . import objects


def run(runner, *args):
    return runner.invoke(cli, list(args), catch_exceptions=False)


def _account_row(engine, account_id):
    with engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT plan, requests_per_minute, monthly_requests, quota_source "
                "FROM accounts WHERE id = :id"
            ),
            {"id": account_id},
        ).one()


def test_accounts_show_answers_plan_quota_source_and_why(runner, seed_account):
    seed_account(plan="pro", invoice_failed=True)
    result = run(runner, "accounts", "show", "acct_1")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "pro (since 2026-11-02 12:00:00)" in out
    assert "30 req/min · 10,000 req/month  (source: plan)" in out
    assert "the pro plan's defaults" in out
    assert "Plan set by  Stripe event evt_acct_1_upgrade, from free" in out
    assert "2026-11-02 12:00:00 by Stripe event evt_acct_1_upgrade" in out
    assert "sub_acct_1" in out
    assert "open PAYMENT FAILED" in out
    assert "free -> pro" in out


def test_accounts_show_by_customer_id_and_as_json(runner, client, auth, seed_account):
    seed_account(plan="scale", override=(500, 5_000_000))
    result = run(runner, "accounts", "show", "cus_1", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    api = client.get("/ops/api/accounts/acct_1", headers=auth).get_json()
    assert {k: document[k] for k in api} == api
    assert document["quota"]["source"] == "override"
    assert [h["cause"] for h in document["history"]] == [
        {"ops_action": "quota set by alice: enterprise deal"},
        {"event_id": "evt_acct_1_upgrade"},
    ]
    assert document["invoices"][0]["id"] == "in_acct_1"


def test_accounts_show_unknown_id_fails_with_a_message(runner):
    result = run(runner, "accounts", "show", "acct_nope")
    assert result.exit_code == 1
    assert "No account or customer 'acct_nope'" in result.output


def test_accounts_list_filters_by_plan_and_subscription_status(runner, seed_account):
    seed_account("acct_a", plan="pro", customer_id="cus_a")
    seed_account("acct_b", plan="scale", customer_id="cus_b", subscription_status="past_due")
    everything = run(runner, "accounts", "list")
    assert "acct_a" in everything.output
    assert "acct_b" in everything.output
    assert "2 account(s)" in everything.output
    scale = run(runner, "accounts", "list", "--plan", "scale")
    assert "acct_b" in scale.output
    assert "acct_a" not in scale.output
    past_due = run(runner, "accounts", "list", "--status", "past_due", "--json")
    assert [a["account_id"] for a in json.loads(past_due.output)["accounts"]] == ["acct_b"]
    paged = run(runner, "accounts", "list", "--limit", "1")
    assert "more: --cursor" in paged.output
    bad = runner.invoke(cli, ["accounts", "list", "--plan", "gold"])
    assert bad.exit_code == 2


def test_events_list_and_show(runner, engine):
    failing = make_event("invoice.paid", {"object": "invoice", "id": "in_1", "customer": "cus_7"})
    store_event(engine, failing, status="failed", last_error="UnknownPrice: price_x")
    fine = make_event("customer.updated", {"object": "customer", "id": "cus_8"})
    store_event(engine, fine, status="processed")
    listed = run(runner, "events", "list", "--status", "failed")
    assert failing["id"] in listed.output
    assert fine["id"] not in listed.output
    assert "UnknownPrice: price_x" in listed.output
    by_customer = run(runner, "events", "list", "--customer", "cus_8", "--json")
    assert [e["id"] for e in json.loads(by_customer.output)["events"]] == [fine["id"]]
    by_type = run(runner, "events", "list", "--type", "invoice.paid", "--json")
    assert [e["id"] for e in json.loads(by_type.output)["events"]] == [failing["id"]]
    shown = run(runner, "events", "show", failing["id"], "--json")
    document = json.loads(shown.output)
    assert document["status"] == "failed"
    assert document["customer_id"] == "cus_7"
    assert run(runner, "events", "show", failing["id"]).output.count("failed") >= 1
    missing = run(runner, "events", "show", "evt_nope")
    assert missing.exit_code == 1
    assert "No event 'evt_nope'" in missing.output


@pytest.fixture
def unmapped_failure(client, engine):
    """acct_42 linked to cus_42, and a subscription event whose price maps to no plan."""
    checkout = objects.checkout_completed("acct_42", "cus_42", "buyer@example.com")
    assert post_event(client, make_event("checkout.session.completed", checkout)).status_code == 200
    sub = objects.subscription(
        "sub_42", "cus_42", price_obj=objects.price("price_mystery"), account_id="acct_42"
    )
    event = make_event("customer.subscription.updated", sub)
    answer = post_event(client, event).get_json()
    assert answer["status"] == "failed", answer
    return event["id"]


@pytest.fixture
def mapped_runner(settings):
    """The CLI of an app configured with the missing price mapping (the ops fix)."""
    app = create_app(settings.replace(plan_price_map={"price_mystery": "scale"}))
    yield app.test_cli_runner()
    app.extensions["engine"].dispose()


def test_replay_dry_run_shows_the_change_and_changes_nothing(
    mapped_runner, engine, unmapped_failure
):
    result = run(mapped_runner, "events", "replay", unmapped_failure, "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"[dry run] {unmapped_failure}: would go failed -> processed (account acct_42)" in (
        result.output
    )
    assert "event.status: failed -> processed" in result.output
    assert "plan: free -> scale" in result.output
    assert "quota.requests_per_minute: 10 -> 60" in result.output
    assert "subscriptions[sub_42].status: — -> active" in result.output
    assert _account_row(engine, "acct_42").plan == "free"
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT status, attempts FROM stripe_events WHERE id = :id"),
            {"id": unmapped_failure},
        ).one()
    assert (row.status, row.attempts) == ("failed", 1)


def test_replay_applies_a_fixed_event_through_the_webhook_path(
    mapped_runner, engine, unmapped_failure
):
    result = run(mapped_runner, "events", "replay", unmapped_failure)
    assert result.exit_code == 0, result.output
    assert f"{unmapped_failure}: went failed -> processed (account acct_42)" in result.output
    assert tuple(_account_row(engine, "acct_42")) == ("scale", 60, 100_000, "plan")
    with engine.connect() as connection:
        cause = connection.execute(
            text("SELECT cause_event_id FROM audit_log WHERE account_id = 'acct_42'")
        ).scalar_one()
    assert cause == unmapped_failure


def test_replay_failed_retries_every_failed_event_and_reports_the_rest(
    runner, mapped_runner, engine, unmapped_failure
):
    other = make_event("product.created", {"object": "product", "id": "prod_1"})
    store_event(engine, other, status="dead", attempts=8, last_error="RuntimeError: x")
    still = run(runner, "events", "replay", "--failed")
    # Without the mapping the subscription event still fails: exit 1 says so.
    assert still.exit_code == 1
    assert "2 event(s) replayed; left 1 failing." in still.output
    assert f"{other['id']}: went dead -> ignored" in still.output
    fixed = run(mapped_runner, "events", "replay", "--failed")
    assert fixed.exit_code == 0, fixed.output
    assert f"{unmapped_failure}: went failed -> processed" in fixed.output
    assert run(runner, "events", "replay", "--failed").output.strip() == "No failed events."


def test_replay_needs_an_id_or_failed(runner):
    assert runner.invoke(cli, ["events", "replay"]).exit_code == 2
    assert runner.invoke(cli, ["events", "replay", "evt_1", "--failed"]).exit_code == 2
    missing = runner.invoke(cli, ["events", "replay", "evt_nope"])
    assert missing.exit_code == 1
    assert "No event 'evt_nope'" in missing.output


def test_quota_set_and_clear_change_the_account_and_the_audit_trail(runner, client, engine):
    checkout = objects.checkout_completed("acct_9", "cus_9", "nine@example.com")
    post_event(client, make_event("checkout.session.completed", checkout))
    sub = objects.subscription("sub_9", "cus_9", price_obj=objects.price("price_pro", "pro"))
    assert post_event(client, make_event("customer.subscription.created", sub)).status_code == 200
    assert _account_row(engine, "acct_9").plan == "pro"

    result = run(
        runner,
        "quota",
        "set",
        "acct_9",
        "--rpm",
        "500",
        "--monthly",
        "5000000",
        "--reason",
        "enterprise pilot",
        "--by",
        "alice",
    )
    assert result.exit_code == 0, result.output
    assert "acct_9: quota 30 req/min · 10,000 req/month [source: plan] -> " in result.output
    assert "500 req/min · 5,000,000 req/month [source: override] (plan pro)" in result.output
    assert tuple(_account_row(engine, "acct_9")) == ("pro", 500, 5_000_000, "override")

    shown = json.loads(run(runner, "accounts", "show", "acct_9", "--json").output)
    assert shown["override"]["set_by"] == "alice"
    assert shown["override"]["reason"] == "enterprise pilot"
    assert shown["last_change"]["cause"] == {"ops_action": "quota set by alice: enterprise pilot"}

    cleared = run(runner, "quota", "clear", "acct_9", "--by", "alice")
    assert cleared.exit_code == 0, cleared.output
    assert "-> 30 req/min · 10,000 req/month [source: plan] (plan pro)" in cleared.output
    assert tuple(_account_row(engine, "acct_9")) == ("pro", 30, 10_000, "plan")
    history = json.loads(run(runner, "accounts", "show", "acct_9", "--json").output)["history"]
    assert [h["cause"].get("ops_action") for h in history[:2]] == [
        "quota override cleared by alice",
        "quota set by alice: enterprise pilot",
    ]


def test_quota_set_rejects_unknown_accounts_and_bad_numbers(runner):
    missing = runner.invoke(cli, ["quota", "set", "acct_x", "--rpm", "5", "--monthly", "5"])
    assert missing.exit_code == 1
    assert "No account 'acct_x'" in missing.output
    assert (
        runner.invoke(cli, ["quota", "set", "acct_x", "--rpm", "0", "--monthly", "5"]).exit_code
        == 2
    )
    assert runner.invoke(cli, ["quota", "clear", "acct_x"]).exit_code == 1


@pytest.fixture
def live_url(app):
    """The application on a real socket, as a deployment would be."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/webhooks/stripe"
    server.shutdown()
    thread.join(timeout=10)


@pytest.mark.parametrize("event_type", SAMPLE_TYPES)
def test_send_test_event_signs_and_posts_a_sample_the_receiver_stores(
    runner, live_url, engine, event_type
):
    result = runner.invoke(
        cli,
        ["stripe", "send-test-event", event_type, "--url", live_url, "--customer", "cus_t"],
        env={"STRIPE_WEBHOOK_SECRET": TEST_SECRET},
    )
    assert result.exit_code == 0, result.output
    event_id = re.search(r"(evt_\w+)", result.output).group(1)
    assert f'"id":"{event_id}"' in result.output
    assert result.output.splitlines()[-1].startswith("200 ")
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT type, customer_id, status FROM stripe_events WHERE id = :id"),
            {"id": event_id},
        ).one()
    assert row.type == event_type
    assert row.customer_id == "cus_t"
    assert row.status != "failed", "a sample must be something the receiver can apply"


def test_send_test_event_exits_1_when_the_receiver_refuses_it(runner, live_url, engine):
    result = runner.invoke(
        cli,
        ["stripe", "send-test-event", "invoice.paid", "--url", live_url],
        env={"STRIPE_WEBHOOK_SECRET": "whsec_not_the_receivers"},
    )
    assert result.exit_code == 1
    assert "400 " in result.output
    assert "invalid_signature" in result.output
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM stripe_events")).scalar_one() == 0
    unreachable = runner.invoke(
        cli,
        ["stripe", "send-test-event", "invoice.paid", "--url", "http://127.0.0.1:9/x"],
        env={"STRIPE_WEBHOOK_SECRET": TEST_SECRET},
    )
    assert unreachable.exit_code == 1
    assert "Could not reach" in unreachable.output

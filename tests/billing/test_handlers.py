"""One test per handled Stripe event type: a signed fixture in, exact database state out."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.stripe_webhooks.handlers import HANDLERS
from tests.billing import stripe_objects as so
from tests.billing.db import FREE, PRO, SCALE, audit, deliver, event_status, one, quota
from tests.helpers import FIXTURES, load_fixture

T = so.T0
ACCOUNT = so.ACCOUNT_ID
SUB = so.SUBSCRIPTION_ID

SUBSCRIPTION_COLUMNS = (
    "SELECT customer_id, account_id, status, price_id, plan, current_period_start,"
    " current_period_end, cancel_at_period_end, cancel_at, canceled_at, ended_at,"
    " trial_start, trial_end, deleted, applied_event_id, applied_event_created"
    " FROM subscriptions WHERE id = :i"
)
INVOICE_COLUMNS = (
    "SELECT customer_id, account_id, subscription_id, status, amount_due, amount_paid,"
    " amount_remaining, currency, attempt_count, next_payment_attempt, hosted_invoice_url,"
    " billing_reason, applied_event_id, applied_event_created FROM invoices WHERE id = :i"
)


def ts(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def link(client):
    """Link the fixtures' customer to the fixtures' account, as checkout does."""
    assert deliver(client, load_fixture("checkout.session.completed")) == "processed"


def subscription_row(engine):
    return one(engine, SUBSCRIPTION_COLUMNS, i=SUB)


def test_every_handled_type_has_a_fixture():
    missing = [t for t in HANDLERS if not (FIXTURES / f"{t}.json").is_file()]
    assert missing == []


@pytest.mark.parametrize("event_type", sorted(HANDLERS))
def test_every_fixture_is_a_signed_snapshot_event_of_its_type(client, event_type):
    fixture = load_fixture(event_type)
    assert fixture["type"] == event_type
    assert fixture["object"] == "event"
    assert fixture["data"]["object"]["id"]


def test_checkout_session_completed_creates_and_links_the_account(client, engine):
    event = load_fixture("checkout.session.completed")
    assert deliver(client, event) == "processed"
    assert one(engine, "SELECT id, email, plan, quota_source FROM accounts") == {
        "id": ACCOUNT,
        "email": so.EMAIL,
        "plan": "free",
        "quota_source": "plan",
    }
    assert one(engine, "SELECT id, account_id, email, deleted FROM stripe_customers") == {
        "id": so.CUSTOMER_ID,
        "account_id": ACCOUNT,
        "email": so.EMAIL,
        "deleted": False,
    }
    assert quota(engine, ACCOUNT) == FREE
    assert event_status(engine, event["id"])["account_id"] == ACCOUNT
    assert audit(engine, ACCOUNT) == []


def test_checkout_session_async_payment_succeeded_links_through_metadata(client, engine):
    event = load_fixture("checkout.session.async_payment_succeeded")
    assert event["data"]["object"]["client_reference_id"] is None
    assert deliver(client, event) == "processed"
    assert one(engine, "SELECT id, account_id FROM stripe_customers") == {
        "id": so.CUSTOMER_ID,
        "account_id": ACCOUNT,
    }
    assert quota(engine, ACCOUNT) == FREE


def test_checkout_session_async_payment_failed_still_links(client, engine):
    event = load_fixture("checkout.session.async_payment_failed")
    assert deliver(client, event) == "processed"
    assert one(engine, "SELECT account_id FROM stripe_customers WHERE id = :c", c=so.CUSTOMER_ID)
    assert quota(engine, ACCOUNT) == FREE


def test_customer_subscription_created_incomplete_grants_nothing(client, engine):
    link(client)
    event = load_fixture("customer.subscription.created")
    assert deliver(client, event) == "processed"
    assert subscription_row(engine) == {
        "customer_id": so.CUSTOMER_ID,
        "account_id": ACCOUNT,
        "status": "incomplete",
        "price_id": so.PRO["id"],
        "plan": "pro",
        "current_period_start": ts(T),
        "current_period_end": ts(T + so.MONTH),
        "cancel_at_period_end": False,
        "cancel_at": None,
        "canceled_at": None,
        "ended_at": None,
        "trial_start": None,
        "trial_end": None,
        "deleted": False,
        "applied_event_id": event["id"],
        "applied_event_created": ts(T + 5),
    }
    assert quota(engine, ACCOUNT) == FREE
    assert audit(engine, ACCOUNT) == []


def test_customer_subscription_updated_to_active_grants_pro(client, engine):
    link(client)
    event = load_fixture("customer.subscription.updated")
    assert deliver(client, event) == "processed"
    row = subscription_row(engine)
    assert (row["status"], row["plan"], row["deleted"]) == ("active", "pro", False)
    assert row["current_period_end"] == ts(T + so.MONTH)
    assert quota(engine, ACCOUNT) == PRO
    assert audit(engine, ACCOUNT) == [
        {
            "plan_before": "free",
            "plan_after": "pro",
            "requests_per_minute_before": 10,
            "requests_per_minute_after": 30,
            "monthly_requests_before": 1_000,
            "monthly_requests_after": 10_000,
            "quota_source_before": "plan",
            "quota_source_after": "plan",
            "cause_event_id": event["id"],
            "cause_ops_action": None,
        }
    ]


def test_customer_subscription_updated_in_the_2024_shape(client, engine):
    """Billing period on the subscription, price mapped by metadata.plan."""
    link(client)
    event = load_fixture("customer.subscription.updated.2024-06-20")
    assert "current_period_end" not in event["data"]["object"]["items"]["data"][0]
    assert deliver(client, event) == "processed"
    row = subscription_row(engine)
    assert (row["status"], row["plan"], row["price_id"]) == ("active", "scale", so.SCALE["id"])
    assert (row["current_period_start"], row["current_period_end"]) == (
        ts(T),
        ts(T + so.MONTH),
    )
    assert quota(engine, ACCOUNT) == SCALE


def test_customer_subscription_deleted_ends_access(client, engine):
    link(client)
    deliver(client, load_fixture("customer.subscription.updated"))
    event = load_fixture("customer.subscription.deleted")
    assert deliver(client, event) == "processed"
    row = subscription_row(engine)
    assert (row["status"], row["deleted"]) == ("canceled", True)
    assert row["ended_at"] == ts(T + 40 * 86_400)
    assert row["applied_event_id"] == event["id"]
    assert quota(engine, ACCOUNT) == FREE
    assert [
        (e["plan_before"], e["plan_after"], e["cause_event_id"]) for e in audit(engine, ACCOUNT)
    ][-1] == ("pro", "free", event["id"])


def test_customer_subscription_paused_grants_nothing(client, engine):
    link(client)
    deliver(client, load_fixture("customer.subscription.trial_will_end"))
    assert quota(engine, ACCOUNT) == PRO
    event = load_fixture("customer.subscription.paused")
    assert deliver(client, event) == "processed"
    row = subscription_row(engine)
    assert (row["status"], row["deleted"], row["trial_end"]) == (
        "paused",
        False,
        ts(T + 14 * 86_400),
    )
    assert quota(engine, ACCOUNT) == FREE


def test_customer_subscription_resumed_grants_its_plan_again(client, engine):
    link(client)
    deliver(client, load_fixture("customer.subscription.paused"))
    event = load_fixture("customer.subscription.resumed")
    assert deliver(client, event) == "processed"
    row = subscription_row(engine)
    assert (row["status"], row["current_period_start"]) == ("active", ts(T + 20 * 86_400))
    assert quota(engine, ACCOUNT) == PRO


def test_customer_subscription_trial_will_end_keeps_the_trial(client, engine):
    link(client)
    event = load_fixture("customer.subscription.trial_will_end")
    assert deliver(client, event) == "processed"
    row = subscription_row(engine)
    assert (row["status"], row["trial_start"], row["trial_end"]) == (
        "trialing",
        ts(T),
        ts(T + 14 * 86_400),
    )
    assert quota(engine, ACCOUNT) == PRO


def test_invoice_paid_records_the_invoice(client, engine):
    link(client)
    event = load_fixture("invoice.paid")
    assert deliver(client, event) == "processed"
    assert one(engine, INVOICE_COLUMNS, i="in_1RZ3rC2eZvKYlo2Cv1aB0001") == {
        "customer_id": so.CUSTOMER_ID,
        "account_id": ACCOUNT,
        "subscription_id": SUB,
        "status": "paid",
        "amount_due": 2900,
        "amount_paid": 2900,
        "amount_remaining": 0,
        "currency": "usd",
        "attempt_count": 1,
        "next_payment_attempt": None,
        "hosted_invoice_url": (
            "https://invoice.stripe.com/i/acct_1RZ3kE2eZvKYlo2C/test_in_1RZ3rC2eZvKYlo2Cv1aB0001"
        ),
        "billing_reason": "subscription_create",
        "applied_event_id": event["id"],
        "applied_event_created": ts(T + 11),
    }
    # An invoice does not decide the plan; the subscription's status does.
    assert quota(engine, ACCOUNT) == FREE


def test_invoice_paid_in_the_2024_shape_links_through_subscription_metadata(client, engine):
    """`invoice.subscription` (not `parent`), and the account from subscription metadata."""
    event = load_fixture("invoice.paid.2024-06-20")
    assert "parent" not in event["data"]["object"]
    assert deliver(client, event) == "processed"
    row = one(engine, INVOICE_COLUMNS, i="in_1RZ3rC2eZvKYlo2Cv1aB0001")
    assert (row["subscription_id"], row["status"], row["account_id"]) == (SUB, "paid", ACCOUNT)
    assert one(
        engine, "SELECT account_id FROM stripe_customers WHERE id = :c", c=so.CUSTOMER_ID
    ) == {"account_id": ACCOUNT}


def test_invoice_payment_succeeded_records_the_invoice(client, engine):
    link(client)
    event = load_fixture("invoice.payment_succeeded")
    assert deliver(client, event) == "processed"
    row = one(engine, INVOICE_COLUMNS, i="in_1RZ3rC2eZvKYlo2Cv1aB0001")
    assert (row["status"], row["amount_paid"], row["applied_event_id"]) == (
        "paid",
        2900,
        event["id"],
    )


def test_invoice_payment_failed_records_attempts_and_next_retry(client, engine):
    link(client)
    event = load_fixture("invoice.payment_failed")
    assert deliver(client, event) == "processed"
    row = one(engine, INVOICE_COLUMNS, i="in_1RZ5aF2eZvKYlo2Cw2bC0002")
    assert row == {
        "customer_id": so.CUSTOMER_ID,
        "account_id": ACCOUNT,
        "subscription_id": SUB,
        "status": "open",
        "amount_due": 2900,
        "amount_paid": 0,
        "amount_remaining": 2900,
        "currency": "usd",
        "attempt_count": 1,
        "next_payment_attempt": ts(T + so.MONTH + 3 * 86_400),
        "hosted_invoice_url": (
            "https://invoice.stripe.com/i/acct_1RZ3kE2eZvKYlo2C/test_in_1RZ5aF2eZvKYlo2Cw2bC0002"
        ),
        "billing_reason": "subscription_cycle",
        "applied_event_id": event["id"],
        "applied_event_created": ts(T + so.MONTH + 60),
    }


def test_invoice_payment_action_required_records_the_open_invoice(client, engine):
    link(client)
    event = load_fixture("invoice.payment_action_required")
    assert deliver(client, event) == "processed"
    row = one(engine, INVOICE_COLUMNS, i="in_1RZ5bG2eZvKYlo2Cx3cD0003")
    assert (row["status"], row["billing_reason"], row["amount_remaining"]) == (
        "open",
        "subscription_update",
        2900,
    )


def test_customer_updated_changes_the_email(client, engine):
    link(client)
    event = load_fixture("customer.updated")
    assert deliver(client, event) == "processed"
    assert one(engine, "SELECT email, name, deleted, applied_event_id FROM stripe_customers") == {
        "email": "finance@acme.example",
        "name": "Acme Corp",
        "deleted": False,
        "applied_event_id": event["id"],
    }
    assert one(engine, "SELECT email FROM accounts") == {"email": "finance@acme.example"}


def test_customer_deleted_marks_the_customer_deleted_for_good(client, engine):
    link(client)
    event = load_fixture("customer.deleted")
    assert deliver(client, event) == "processed"
    assert one(engine, "SELECT deleted, applied_event_id FROM stripe_customers") == {
        "deleted": True,
        "applied_event_id": event["id"],
    }
    # A customer.updated delivered late does not undelete it.
    assert deliver(client, load_fixture("customer.updated")) == "processed"
    assert one(engine, "SELECT deleted, applied_event_id FROM stripe_customers") == {
        "deleted": True,
        "applied_event_id": event["id"],
    }


@pytest.mark.parametrize(
    "event_type",
    [
        t
        for t in sorted(HANDLERS)
        if t.startswith(
            ("customer.subscription.", "invoice.", "customer.updated", "customer.deleted")
        )
    ],
)
def test_an_event_for_an_unlinked_customer_waits_then_applies_with_the_link(
    client, engine, event_type
):
    event = load_fixture(event_type)
    if event_type == "invoice.paid":
        event["data"]["object"]["parent"]["subscription_details"]["metadata"] = {}
    assert deliver(client, event) == "pending"
    assert one(engine, "SELECT count(*) AS n FROM accounts") == {"n": 0}
    link(client)
    assert event_status(engine, event["id"])["status"] == "processed"
    assert event_status(engine, event["id"])["account_id"] == ACCOUNT


def test_a_checkout_without_an_account_id_is_ignored(client, engine):
    event = load_fixture("checkout.session.completed")
    event["data"]["object"]["client_reference_id"] = None
    assert deliver(client, event) == "ignored"
    assert one(engine, "SELECT count(*) AS n FROM accounts") == {"n": 0}


def test_a_customer_stays_linked_to_its_first_account(client, engine):
    link(client)
    other = load_fixture("checkout.session.completed")
    other["id"] = "evt_other_checkout"
    other["data"]["object"]["client_reference_id"] = "acc_other"
    assert deliver(client, other) == "processed"
    assert one(engine, "SELECT account_id FROM stripe_customers") == {"account_id": ACCOUNT}


SPEC_TYPES = {
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.trial_will_end",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "customer.updated",
    "customer.deleted",
}


def test_the_handler_table_is_exactly_the_types_spec_lists():
    assert set(HANDLERS) == SPEC_TYPES
    assert all(handler.__doc__ and f"`{t}`" in handler.__doc__ for t, handler in HANDLERS.items())


def test_an_unhandled_type_is_ignored(client, engine):
    event = load_fixture("customer.updated")
    event["type"], event["id"] = "customer.source.created", "evt_unhandled"
    assert deliver(client, event) == "ignored"


def test_subscription_metadata_links_the_customer_and_applies_what_waited(client, engine):
    waiting = load_fixture("customer.updated")
    assert deliver(client, waiting) == "pending"
    event = load_fixture("customer.subscription.updated")
    event["data"]["object"]["metadata"] = {"account_id": "acc_from_metadata"}
    assert deliver(client, event) == "processed"
    assert one(engine, "SELECT account_id FROM stripe_customers") == {
        "account_id": "acc_from_metadata"
    }
    assert quota(engine, "acc_from_metadata") == PRO
    assert event_status(engine, waiting["id"])["status"] == "processed"
    assert one(engine, "SELECT email FROM accounts") == {"email": "finance@acme.example"}

"""The direct path (`stripe_webhooks/direct.py`) gives every event the full path's result.

What this module proves:

- every event type the direct path takes has a handler on the full path;
- a realistic stream (checkouts, a whole subscription lifecycle, invoices, customer
  changes) delivered in several arrival orders ends in exactly the same stored state and
  the same answers whether the direct path is on or the full path is forced;
- the direct path really settles a linked customer's events on its own (the full path is
  made to raise), duplicates included;
- each case `stripe_receive_event` refuses with WH001 (customer not linked, an unsettled
  event redelivered, a conflicting link, a same-second tie with the Stripe API configured)
  ends as the full path decides;
- a payload PostgreSQL refuses answers 400 and stores nothing;
- a direct statement that fails midway leaves nothing behind: the event row and the
  snapshot it wrote before failing are rolled back, so the full path starts from scratch.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine

from service import create_app
from service.config import Settings
from service.stripe_webhooks import direct as direct_module
from service.stripe_webhooks import views as views_module
from service.stripe_webhooks.direct import DIRECT_KINDS, Received
from service.stripe_webhooks.handlers import HANDLERS
from service.stripe_webhooks.payload import Event
from service.stripe_webhooks.processing import ProcessingContext
from tests.billing import stripe_objects as so
from tests.billing.db import PRO, SCALE, audit, deliver, event_status, one, quota, rows
from tests.billing.streams import INVOICE_2, TRIAL_SUB, Step, events_of, lifecycle
from tests.billing.test_convergence import reset
from tests.helpers import make_event, post_event
from tests.stripe_double import StripeDouble

ACCOUNT = so.ACCOUNT_ID
OTHER_ACCOUNT = "acc_9Zt4wQ"
INVOICE_3 = "in_1RZ6cH2eZvKYlo2Cy4dE0003"
ASYNC_SUCCEEDED = "checkout.session.async_payment_succeeded"
ASYNC_FAILED = "checkout.session.async_payment_failed"
CHECKOUT_TYPES = frozenset(t for t in DIRECT_KINDS if t.startswith("checkout.session."))

Delivery = dict[str, Any]


# --- spies on the two paths --------------------------------------------------------------


def spy_on_direct_path(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(event id, type) of each delivery the direct path settled, in arrival order."""
    settled: list[tuple[str, str]] = []
    receive_direct = direct_module.receive_direct

    def spying(
        engine: Engine, event: Event, raw_json: str, context: ProcessingContext
    ) -> Received | None:
        received = receive_direct(engine, event, raw_json, context)
        if received is not None:
            settled.append((event.id, event.type))
        return received

    monkeypatch.setattr(views_module, "receive_direct", spying)
    return settled


def spy_on_full_path(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The id of each delivery that reached the full path, in arrival order."""
    reached: list[str] = []
    receive_full = views_module._receive_full

    def spying(engine: Engine, event: Event, raw_json: str, context: ProcessingContext) -> str:
        reached.append(event.id)
        return receive_full(engine, event, raw_json, context)

    monkeypatch.setattr(views_module, "_receive_full", spying)
    return reached


def force_full_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views_module, "receive_direct", lambda *a, **k: None)


class FullPathReached(Exception):
    """Raised by `forbid_full_path` when a delivery reaches the full path."""


def forbid_full_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(engine: Engine, event: Event, raw_json: str, context: ProcessingContext) -> str:
        raise FullPathReached(event.id)

    monkeypatch.setattr(views_module, "_receive_full", refuse)


# --- reading what was stored -------------------------------------------------------------

# Every column is compared, except these: set from the database's clock (compared by
# whether they are set) or from a sequence (dropped).
CLOCK_COLUMNS = frozenset(
    {
        "created_at",
        "updated_at",
        "received_at",
        "processed_at",
        "next_attempt_at",
        "at",
        "plan_since",
    }
)
SEQUENCE_COLUMNS = frozenset({"audit_log.id"})
TABLES = {
    "stripe_events": "id",
    "accounts": "id",
    "stripe_customers": "id",
    "subscriptions": "id",
    "invoices": "id",
    "audit_log": "id",
}


def stored_state(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of the billing tables, without ids and timestamps the database assigns."""
    state = {}
    for table, order in TABLES.items():
        state[table] = [
            {
                column: (value is not None) if column in CLOCK_COLUMNS else value
                for column, value in row.items()
                if f"{table}.{column}" not in SEQUENCE_COLUMNS
            }
            for row in rows(engine, f"SELECT * FROM {table} ORDER BY {order}")
        ]
    return state


def deliver_and_observe(
    client: FlaskClient, engine: Engine, deliveries: list[Delivery]
) -> list[dict[str, Any]]:
    """Deliver each event in turn; after each, its answer and everything stored."""
    observed = []
    for delivery in deliveries:
        response = post_event(client, delivery)
        answer = (response.status_code, response.get_json()["status"])
        observed.append({"answer": answer, **stored_state(engine)})
    return observed


def subscription_row(engine: Engine, subscription_id: str = so.SUBSCRIPTION_ID) -> Any:
    return one(engine, "SELECT * FROM subscriptions WHERE id = :i", i=subscription_id)


# --- events ------------------------------------------------------------------------------


def event(
    event_type: str, obj: dict[str, Any], event_id: str, created: int = so.T0 + 100
) -> Delivery:
    return make_event(event_type, copy.deepcopy(obj), event_id=event_id, created=created)


def checkout(event_id: str = "evt_checkout", account_id: str = ACCOUNT) -> Delivery:
    return event("checkout.session.completed", so.checkout_session(account_id=account_id), event_id)


def subscription_updated(
    event_id: str, price: dict[str, Any] = so.PRO, created: int = so.T0 + 200
) -> Delivery:
    return event(
        "customer.subscription.updated", so.subscription("active", price), event_id, created
    )


def full_stream(*, ties: bool = False) -> list[Delivery]:
    """The billing lifecycle stream (tests/billing/streams.py) with the direct kinds it
    lacks added where Stripe would send them: both async checkout outcomes, an invoice
    that needs the customer's action, and the customer's deletion at the end."""
    steps: dict[str, Step] = {s.name: s for s in lifecycle(ties=ties)}
    stream = events_of(list(steps.values()))
    linked_at = steps["checkout"].events[0]["created"]
    recovered_at = steps["recovered"].events[0]["created"]
    action_required = so.invoice(
        "open", invoice_id=INVOICE_3, billing_reason="subscription_update", amount=4200
    )
    extras = [
        event(
            ASYNC_SUCCEEDED,
            so.checkout_session(via_metadata=True),
            "evt_extra_async_succeeded",
            linked_at + 1,
        ),
        event(
            ASYNC_FAILED,
            so.checkout_session(payment_status="unpaid", session_id="cs_test_retry0001"),
            "evt_extra_async_failed",
            linked_at + 2,
        ),
        event(
            "invoice.payment_action_required",
            action_required,
            "evt_extra_action_required",
            recovered_at + 1,
        ),
        event(
            "customer.deleted",
            so.customer(email="finance@acme.example"),
            "evt_extra_customer_deleted",
            max(e["created"] for e in stream) + 100,
        ),
    ]
    # Stable: events of one second keep the order Stripe produced them in.
    return sorted(stream + extras, key=lambda e: e["created"])


def each_twice(stream: list[Delivery]) -> list[Delivery]:
    return [e for e in stream for _ in range(2)]


def checkouts_last(stream: list[Delivery]) -> list[Delivery]:
    """Everything waits for the link, then the checkouts arrive."""
    return [e for e in stream if e["type"] not in CHECKOUT_TYPES] + [
        e for e in stream if e["type"] in CHECKOUT_TYPES
    ]


def linked_first_by(event_type: str) -> Callable[[list[Delivery]], list[Delivery]]:
    """The stream with the first event of `event_type` moved to the front."""

    def arrange(stream: list[Delivery]) -> list[Delivery]:
        first = next(e for e in stream if e["type"] == event_type)
        return [first] + [e for e in stream if e is not first]

    return arrange


def shuffled_with_redeliveries(stream: list[Delivery]) -> list[Delivery]:
    chance = random.Random(20261204)
    deliveries = stream + chance.sample(stream, 8)
    chance.shuffle(deliveries)
    return deliveries


@dataclass(frozen=True)
class Arrival:
    name: str
    arrange: Callable[[list[Delivery]], list[Delivery]]
    ties: bool = False
    # Whether every direct kind arrives after its customer is linked, so that the direct
    # run settles at least one event of each kind directly.
    every_kind_direct: bool = False


ARRIVALS = [
    Arrival("in_order", list, every_kind_direct=True),
    Arrival("in_order_with_same_second_ties", list, ties=True, every_kind_direct=True),
    Arrival("each_delivered_twice", each_twice, every_kind_direct=True),
    Arrival("async_success_links_first", linked_first_by(ASYNC_SUCCEEDED)),
    Arrival("async_failure_links_first", linked_first_by(ASYNC_FAILED)),
    Arrival("checkouts_last", checkouts_last),
    Arrival("reversed", lambda stream: stream[::-1]),
    Arrival("shuffled_with_redeliveries", shuffled_with_redeliveries),
]


# --- 1. the table ------------------------------------------------------------------------


def test_every_direct_kind_has_a_handler_on_the_full_path() -> None:
    assert [t for t in DIRECT_KINDS if t not in HANDLERS] == []


# --- 2. equivalence ----------------------------------------------------------------------


def test_the_stream_holds_every_direct_kind() -> None:
    assert {e["type"] for e in full_stream()} == set(DIRECT_KINDS)


@pytest.mark.parametrize("arrival", ARRIVALS, ids=[a.name for a in ARRIVALS])
def test_the_direct_and_the_full_path_end_in_the_same_state(
    client: FlaskClient, engine: Engine, monkeypatch: pytest.MonkeyPatch, arrival: Arrival
) -> None:
    deliveries = arrival.arrange(full_stream(ties=arrival.ties))

    settled_directly = spy_on_direct_path(monkeypatch)
    with_direct_path = deliver_and_observe(client, engine, deliveries)

    reset(engine)
    force_full_path(monkeypatch)
    full_path_only = deliver_and_observe(client, engine, deliveries)

    # Compared after every delivery, not only at the end: a later snapshot must not hide
    # a difference in how an earlier one was applied.
    for n, (direct, full) in enumerate(zip(with_direct_path, full_path_only, strict=True)):
        delivery = deliveries[n]
        assert direct == full, f"after delivery {n}: {delivery['type']} {delivery['id']}"

    # The comparison means something: the direct run settled events on its own, every
    # delivery was answered 200, the stream changed the plan and every event was settled.
    assert settled_directly
    if arrival.every_kind_direct:
        assert {event_type for _, event_type in settled_directly} == set(DIRECT_KINDS)
    assert {answer["answer"] for answer in full_path_only} <= {
        (200, "processed"),
        (200, "duplicate"),
        (200, "pending"),
    }
    final = full_path_only[-1]
    assert final["audit_log"]
    assert [row["status"] for row in final["stripe_events"]] == ["processed"] * len(
        {delivery["id"] for delivery in deliveries}
    )


# --- 3. the direct path is taken -----------------------------------------------------------


def test_a_linked_customers_subscription_event_is_settled_without_the_full_path(
    client: FlaskClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_full_path(monkeypatch)
    upgrade = subscription_updated("evt_direct_upgrade")

    assert deliver(client, checkout()) == "processed"
    assert deliver(client, upgrade) == "processed"

    assert quota(engine, ACCOUNT) == PRO
    assert event_status(engine, upgrade["id"]) == {
        "status": "processed",
        "attempts": 1,
        "last_error": None,
        "account_id": ACCOUNT,
    }
    assert subscription_row(engine)["applied_event_id"] == upgrade["id"]
    assert [entry["cause_event_id"] for entry in audit(engine, ACCOUNT)] == [upgrade["id"]]


def test_a_redelivered_event_is_a_duplicate_on_the_direct_path(
    client: FlaskClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_full_path(monkeypatch)
    upgrade = subscription_updated("evt_direct_twice")
    deliver(client, checkout())
    assert deliver(client, upgrade) == "processed"

    assert deliver(client, upgrade) == "duplicate"

    assert event_status(engine, upgrade["id"])["attempts"] == 1
    assert len(audit(engine, ACCOUNT)) == 1


# --- 4. what the direct path hands to the full path --------------------------------------


def test_an_unlinked_customers_event_waits_then_applies_with_the_checkout(
    client: FlaskClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    reached_full_path = spy_on_full_path(monkeypatch)
    early = subscription_updated("evt_before_the_link")
    link = checkout()

    assert deliver(client, early) == "pending"
    assert event_status(engine, early["id"])["status"] == "pending"
    assert rows(engine, "SELECT id FROM accounts") == []

    # The new link has an event waiting: the full path applies it with the checkout.
    assert deliver(client, link) == "processed"

    assert reached_full_path == [early["id"], link["id"]]
    # Attempt 1 left it pending; the checkout's transaction applied it as attempt 2.
    assert event_status(engine, early["id"]) == {
        "status": "processed",
        "attempts": 2,
        "last_error": None,
        "account_id": ACCOUNT,
    }
    assert quota(engine, ACCOUNT) == PRO
    assert [entry["cause_event_id"] for entry in audit(engine, ACCOUNT)] == [early["id"]]


def test_a_failed_event_redelivered_after_the_fix_gets_another_attempt(
    client: FlaskClient,
    engine: Engine,
    app: Flask,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deliver(client, checkout())
    unmapped = subscription_updated("evt_unmapped_price", so.UNMAPPED)
    assert deliver(client, unmapped) == "failed"
    assert "UnknownPrice" in event_status(engine, unmapped["id"])["last_error"]

    # Ops map the price; Stripe redelivers the event.
    fixed = settings.replace(plan_price_map={so.UNMAPPED["id"]: "scale"})
    app.extensions["processing_context"] = ProcessingContext(settings=fixed)
    reached_full_path = spy_on_full_path(monkeypatch)

    assert deliver(client, unmapped) == "processed"

    assert reached_full_path == [unmapped["id"]]
    assert event_status(engine, unmapped["id"]) == {
        "status": "processed",
        "attempts": 2,
        "last_error": None,
        "account_id": ACCOUNT,
    }
    assert quota(engine, ACCOUNT) == SCALE
    assert subscription_row(engine)["price_id"] == so.UNMAPPED["id"]


def test_a_checkout_for_another_account_keeps_the_first_link(
    client: FlaskClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert deliver(client, checkout()) == "processed"
    reached_full_path = spy_on_full_path(monkeypatch)
    conflicting = checkout("evt_checkout_other_account", account_id=OTHER_ACCOUNT)

    assert deliver(client, conflicting) == "processed"

    assert reached_full_path == [conflicting["id"]]
    assert rows(engine, "SELECT id, account_id FROM stripe_customers") == [
        {"id": so.CUSTOMER_ID, "account_id": ACCOUNT}
    ]
    assert rows(engine, "SELECT id FROM accounts") == [{"id": ACCOUNT}]
    assert event_status(engine, conflicting["id"])["account_id"] == ACCOUNT


def paused_and_resumed_in_one_second() -> dict[str, Delivery]:
    """Checkout, a trial, then `resumed` and `paused` of the trial in one second."""
    steps = {s.name: s for s in lifecycle(ties=True)}
    chosen = {name: steps[name].events[0] for name in ("checkout", "trial_started")}
    chosen["resumed"] = steps["resumed"].events[0]
    chosen["paused"] = steps["paused"].events[0]
    assert chosen["resumed"]["created"] == chosen["paused"]["created"]
    return chosen


@pytest.fixture
def stripe_api_app(settings: Settings, stripe_double: StripeDouble) -> Iterator[Flask]:
    """The service with the Stripe API configured; Stripe holds the trial `active`."""
    stripe_double.put(
        copy.deepcopy(paused_and_resumed_in_one_second()["resumed"]["data"]["object"])
    )
    app = create_app(
        settings.replace(stripe_api_key="sk_test_double", stripe_api_base=stripe_double.url)
    )
    app.config["TESTING"] = True
    yield app
    app.extensions["engine"].dispose()


def test_a_same_second_tie_is_decided_by_stripes_answer(
    stripe_api_app: Flask,
    engine: Engine,
    stripe_double: StripeDouble,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = stripe_api_app.test_client()
    settled_directly = spy_on_direct_path(monkeypatch)
    reached_full_path = spy_on_full_path(monkeypatch)
    events = paused_and_resumed_in_one_second()

    assert [deliver(client, e) for e in events.values()] == ["processed"] * 4

    assert [event_id for event_id, _ in settled_directly] == [
        events[name]["id"] for name in ("checkout", "trial_started", "resumed")
    ]
    assert reached_full_path == [events["paused"]["id"]]
    assert [r.path for r in stripe_double.requests] == [f"/v1/subscriptions/{TRIAL_SUB}"]
    assert subscription_row(engine, TRIAL_SUB)["status"] == "active"
    assert quota(engine, ACCOUNT) == SCALE
    assert event_status(engine, events["paused"]["id"])["attempts"] == 1


# --- 5. a payload PostgreSQL refuses ------------------------------------------------------


def test_a_null_character_in_a_linked_customers_event_answers_400_and_stores_nothing(
    client: FlaskClient, engine: Engine
) -> None:
    deliver(client, checkout())
    deliver(client, subscription_updated("evt_before_the_nul"))
    before = stored_state(engine)
    with_nul = subscription_updated("evt_with_a_nul", so.SCALE, created=so.T0 + 300)
    with_nul["data"]["object"]["description"] = "Acme \u0000 plan"

    response = post_event(client, with_nul)

    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_payload"
    assert stored_state(engine) == before
    assert quota(engine, ACCOUNT) == PRO


# --- 6. a direct statement that fails leaves nothing behind -------------------------------


def test_an_unknown_price_is_recorded_failed_and_changes_no_subscription(
    client: FlaskClient, engine: Engine
) -> None:
    deliver(client, checkout())
    deliver(client, subscription_updated("evt_pro"))
    subscription_before = subscription_row(engine)
    unmapped = subscription_updated("evt_unknown_price", so.UNMAPPED, created=so.T0 + 300)

    assert deliver(client, unmapped) == "failed"

    stored = event_status(engine, unmapped["id"])
    assert (stored["status"], stored["attempts"]) == ("failed", 1)
    assert stored["last_error"].startswith("UnknownPrice:")
    assert subscription_row(engine) == subscription_before
    assert quota(engine, ACCOUNT) == PRO


def test_a_snapshot_the_database_refuses_after_the_event_row_is_recorded_failed_once(
    client: FlaskClient, engine: Engine
) -> None:
    """The amount overflows `bigint` when the invoice is written, after the function has
    inserted the event row: that row is rolled back with the statement, so the full path
    stores the event afresh as failed instead of answering `duplicate`."""
    deliver(client, checkout())
    overflowing = so.invoice("open", invoice_id=INVOICE_2, amount=2**63)
    invoice_event = event("invoice.payment_failed", overflowing, "evt_huge_amount")

    assert deliver(client, invoice_event) == "failed"

    stored = event_status(engine, invoice_event["id"])
    assert (stored["status"], stored["attempts"]) == ("failed", 1)
    assert "DataError" in stored["last_error"]
    assert rows(engine, "SELECT id FROM invoices") == []


def test_a_tie_handed_to_the_full_path_leaves_no_trace_of_the_direct_statement(
    stripe_api_app: Flask,
    engine: Engine,
    stripe_double: StripeDouble,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the tie the function has stored the event and the `paused` snapshot (it wins by
    the rule) before refusing; none of that survives the refusal."""
    client = stripe_api_app.test_client()
    events = paused_and_resumed_in_one_second()
    for name in ("checkout", "trial_started", "resumed"):
        deliver(client, events[name])
    before = stored_state(engine)
    forbid_full_path(monkeypatch)

    with pytest.raises(FullPathReached):
        post_event(client, events["paused"])

    assert stored_state(engine) == before
    assert subscription_row(engine, TRIAL_SUB)["status"] == "active"
    assert stripe_double.requests == []
    assert quota(engine, ACCOUNT) == SCALE


def test_an_unlinked_customers_event_stores_only_its_pending_row(
    client: FlaskClient, engine: Engine
) -> None:
    """Refused by the direct statement, it leaves only what the full path stores."""
    early = subscription_updated("evt_unlinked_only")
    assert deliver(client, early) == "pending"
    state = stored_state(engine)
    assert [row["id"] for row in state["stripe_events"]] == [early["id"]]
    assert all(state[table] == [] for table in TABLES if table != "stripe_events")
    assert quota(engine, ACCOUNT) is None

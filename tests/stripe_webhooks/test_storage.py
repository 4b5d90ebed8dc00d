"""What a verified delivery leaves in `stripe_events`, and how redeliveries are answered."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from service.stripe_webhooks import handlers
from service.stripe_webhooks.handlers import Outcome

from ..helpers import make_event, post_event, signed_headers

KNOWN_TYPE = "customer.subscription.updated"


def _row(engine, event_id: str):
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT * FROM stripe_events WHERE id = :id"), {"id": event_id}
        ).one()


def _count(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM stripe_events")).scalar_one()


def _set_status(engine, event_id: str, status: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE stripe_events SET status = :status WHERE id = :id"),
            {"status": status, "id": event_id},
        )


@pytest.fixture
def processed_type(monkeypatch):
    """A handled type whose handler applies the event (stands in for a billing handler)."""
    calls: list[str] = []

    def apply(session, event, context):
        calls.append(event.id)
        return Outcome("processed", account_id="acct_test")

    monkeypatch.setitem(handlers.HANDLERS, "test.storage.applied", apply)
    return calls


def test_every_column_is_stored_before_the_answer(client, engine):
    subscription = {"object": "subscription", "id": "sub_store", "customer": "cus_store"}
    created = 1_764_800_000
    event = make_event("test.unknown.type", subscription, created=created, api_version="2024-06-20")
    body = json.dumps(event, indent=1).encode()
    before = datetime.now(UTC)
    response = client.post("/webhooks/stripe", data=body, headers=signed_headers(body))
    after = datetime.now(UTC)
    assert response.status_code == 200
    assert response.get_json() == {"received": True, "id": event["id"], "status": "ignored"}

    row = _row(engine, event["id"])
    assert row.payload == event
    assert row.type == "test.unknown.type"
    assert row.created == datetime.fromtimestamp(created, UTC)
    assert row.livemode is False
    assert row.api_version == "2024-06-20"
    assert before.replace(microsecond=0) <= row.received_at <= after
    assert row.status == "ignored"
    assert row.attempts == 1
    assert row.last_error is None
    assert row.customer_id == "cus_store"
    assert row.processed_at is not None


def test_a_missing_api_version_is_stored_as_null(client, engine):
    event = make_event("test.unknown.type", {"object": "thing", "id": "x_1"})
    del event["api_version"]
    assert post_event(client, event).status_code == 200
    assert _row(engine, event["id"]).api_version is None


def test_the_payload_is_stored_exactly_as_sent(client, engine):
    obj = {
        "object": "customer",
        "id": "cus_unicode",
        "name": "Zoë \u2603 \U0001f600",
        "metadata": {"nested": [1, 2.5, None, True, {"deep": "x"}]},
        "big": 12345678901234567890,
    }
    event = make_event("customer.updated", obj)
    assert post_event(client, event).status_code == 200
    assert _row(engine, event["id"]).payload == event


def test_a_handled_type_goes_through_its_handler(client, engine, monkeypatch):
    seen: list[str] = []

    def handler(session, event, context):
        seen.append(event.type)
        return Outcome("pending")

    monkeypatch.setitem(handlers.HANDLERS, KNOWN_TYPE, handler)
    event = make_event(KNOWN_TYPE, {"object": "subscription", "id": "sub_p", "customer": "cus_p"})
    response = post_event(client, event)
    assert response.get_json()["status"] == "pending"
    assert seen == [KNOWN_TYPE]
    row = _row(engine, event["id"])
    assert (row.status, row.attempts) == ("pending", 1)


def test_an_unknown_type_is_ignored(client, engine):
    event = make_event("radar.early_fraud_warning.created", {"object": "thing", "id": "x"})
    response = post_event(client, event)
    assert response.status_code == 200
    assert response.get_json()["status"] == "ignored"
    assert _row(engine, event["id"]).status == "ignored"


def test_a_redelivered_settled_event_is_a_duplicate_and_one_row(client, engine, processed_type):
    event = make_event("test.storage.applied", {"object": "thing", "id": "x"})
    assert post_event(client, event).get_json()["status"] == "processed"
    for _ in range(3):
        response = post_event(client, event, timestamp=int(time.time()))
        assert response.status_code == 200
        assert response.get_json() == {"received": True, "id": event["id"], "status": "duplicate"}
    assert _count(engine) == 1
    row = _row(engine, event["id"])
    assert row.attempts == 1
    assert row.status == "processed"
    assert processed_type == [event["id"]]


def test_a_redelivered_ignored_event_is_a_duplicate(client, engine):
    event = make_event("test.unknown.type", {"object": "thing", "id": "x"})
    post_event(client, event)
    assert post_event(client, event).get_json()["status"] == "duplicate"
    assert _row(engine, event["id"]).attempts == 1


@pytest.mark.parametrize("stored_status", ["received", "pending", "failed", "dead"])
def test_a_redelivered_unsettled_event_gets_another_attempt(
    client, engine, processed_type, stored_status
):
    event = make_event("test.storage.applied", {"object": "thing", "id": "x"})
    post_event(client, event)
    _set_status(engine, event["id"], stored_status)

    response = post_event(client, event)
    assert response.status_code == 200
    assert response.get_json()["status"] == "processed"
    row = _row(engine, event["id"])
    assert row.attempts == 2
    assert row.status == "processed"
    assert processed_type == [event["id"], event["id"]]
    assert _count(engine) == 1


def test_a_redelivery_does_not_replace_the_stored_payload(client, engine):
    event = make_event("test.unknown.type", {"object": "thing", "id": "x", "v": 1})
    post_event(client, event)
    changed = json.loads(json.dumps(event))
    changed["data"]["object"]["v"] = 2
    assert post_event(client, changed).get_json()["status"] == "duplicate"
    assert _row(engine, event["id"]).payload["data"]["object"]["v"] == 1


def test_a_failing_handler_keeps_the_event_as_failed_and_answers_200(client, engine, monkeypatch):
    def broken(session, event, context):
        raise RuntimeError("the billing rule is broken")

    monkeypatch.setitem(handlers.HANDLERS, "test.storage.broken", broken)
    event = make_event("test.storage.broken", {"object": "thing", "id": "x"})
    response = post_event(client, event)
    assert response.status_code == 200
    assert response.get_json()["status"] == "failed"
    row = _row(engine, event["id"])
    assert row.status == "failed"
    assert row.attempts == 1
    assert "RuntimeError: the billing rule is broken" in row.last_error
    assert row.next_attempt_at is not None


@pytest.fixture
def live_only_client(settings):
    from service import create_app

    app = create_app(settings.replace(stripe_livemode=True))
    yield app.test_client()
    app.extensions["engine"].dispose()


def test_an_event_of_the_other_mode_is_stored_as_ignored(live_only_client, engine, processed_type):
    event = make_event("test.storage.applied", {"object": "thing", "id": "x"}, livemode=False)
    response = post_event(live_only_client, event)
    assert response.status_code == 200
    assert response.get_json()["status"] == "ignored"
    row = _row(engine, event["id"])
    assert row.status == "ignored"
    assert "STRIPE_LIVEMODE" in row.last_error
    assert processed_type == []


def test_an_event_of_the_configured_mode_is_applied(live_only_client, engine, processed_type):
    event = make_event("test.storage.applied", {"object": "thing", "id": "x"}, livemode=True)
    assert post_event(live_only_client, event).get_json()["status"] == "processed"
    assert processed_type == [event["id"]]

"""Stripe may deliver one event several times at once: 50 simultaneous deliveries to a real
server must leave exactly one row, apply the event once, and answer every one 200."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from service.stripe_webhooks import handlers
from service.stripe_webhooks.handlers import Outcome

from ..helpers import make_event, signed_headers

DELIVERIES = 50

pytestmark = pytest.mark.slow


def _deliver_at_once(base_url: str, body: bytes, count: int) -> list[tuple[int, dict]]:
    """POST `body` from `count` threads released together; return every answer."""
    url = urlsplit(base_url)
    barrier = threading.Barrier(count)
    answers: list[tuple[int, dict]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def deliver() -> None:
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        try:
            connection.connect()
            barrier.wait(timeout=60)
            connection.request("POST", "/webhooks/stripe", body=body, headers=signed_headers(body))
            response = connection.getresponse()
            answer = (response.status, json.loads(response.read()))
            with lock:
                answers.append(answer)
        except BaseException as exc:  # collected and re-raised by the test thread
            with lock:
                errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return answers


@pytest.fixture
def counted_handler(monkeypatch):
    """A handled type that records each application (stands in for a billing handler)."""
    calls: list[str] = []
    lock = threading.Lock()

    def apply(session, event, context):
        # Hold the transaction open a little, so the other deliveries pile up behind it.
        time.sleep(0.05)
        with lock:
            calls.append(event.id)
        return Outcome("processed")

    monkeypatch.setitem(handlers.HANDLERS, "test.concurrency.applied", apply)
    return calls


@pytest.mark.parametrize(
    ("event_type", "customer", "first_status"),
    [
        ("test.concurrency.applied", "cus_concurrent", "processed"),
        ("test.concurrency.applied", None, "processed"),
        ("test.concurrency.unknown", "cus_concurrent", "ignored"),
    ],
    ids=["applied-with-customer", "applied-without-customer", "ignored"],
)
def test_simultaneous_deliveries_store_and_apply_once(
    live_server, engine, counted_handler, event_type, customer, first_status
):
    data_object = {"object": "subscription", "id": "sub_concurrent", "customer": customer}
    event = make_event(event_type, data_object)
    body = json.dumps(event).encode()

    answers = _deliver_at_once(live_server, body, DELIVERIES)

    assert len(answers) == DELIVERIES
    assert [status for status, _ in answers] == [200] * DELIVERIES, answers
    assert all(document["id"] == event["id"] for _, document in answers)
    outcomes = Counter(document["status"] for _, document in answers)
    assert outcomes == {first_status: 1, "duplicate": DELIVERIES - 1}
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, status, attempts FROM stripe_events")).all()
    assert len(rows) == 1
    assert rows[0].id == event["id"]
    assert rows[0].status == first_status
    assert rows[0].attempts == 1
    if first_status == "processed":
        assert counted_handler == [event["id"]]


@pytest.mark.parametrize("customer", [None, "cus_multi"])
def test_simultaneous_deliveries_to_several_processes_store_once(gunicorn_server, engine, customer):
    """Four gunicorn worker processes: only the database can decide, and it does."""
    data_object = {"object": "thing", "id": "x", "customer": customer}
    event = make_event("test.concurrency.unknown", data_object)
    answers = _deliver_at_once(gunicorn_server, json.dumps(event).encode(), DELIVERIES)
    assert [status for status, _ in answers] == [200] * DELIVERIES, answers
    outcomes = Counter(document["status"] for _, document in answers)
    assert outcomes == {"ignored": 1, "duplicate": DELIVERIES - 1}
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, attempts FROM stripe_events")).all()
    assert [(row.id, row.attempts) for row in rows] == [(event["id"], 1)]


def test_simultaneous_deliveries_of_different_events_are_all_stored(live_server, engine):
    """Distinct events of one customer, delivered together: none lost, each stored once."""
    url = urlsplit(live_server)
    events = [
        make_event(
            "test.concurrency.unknown", {"object": "thing", "id": f"x{i}", "customer": "cus_1"}
        )
        for i in range(20)
    ]
    results: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(events))

    def deliver(event: dict) -> None:
        body = json.dumps(event).encode()
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        connection.connect()
        barrier.wait(timeout=60)
        connection.request("POST", "/webhooks/stripe", body=body, headers=signed_headers(body))
        status = connection.getresponse().status
        connection.close()
        with lock:
            results.append(status)

    threads = [threading.Thread(target=deliver, args=(event,)) for event in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == [200] * len(events)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT id FROM stripe_events")).scalars().all()
    assert sorted(stored) == sorted(event["id"] for event in events)

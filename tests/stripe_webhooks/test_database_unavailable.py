"""When the database cannot store an event the endpoint answers 503 with Retry-After, so
Stripe retries; nothing is half-written; and the same application recovers by itself.

The database is reached through a TCP proxy (tests/tcp_proxy.py) that can refuse
connections (the server looks stopped) or hold them open with nothing answering (a
network partition).
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from service.stripe_webhooks import handlers
from service.stripe_webhooks.handlers import Outcome

from ..helpers import make_event, post_event

pytestmark = pytest.mark.slow


def _stored_ids(engine) -> list[str]:
    with engine.connect() as connection:
        return connection.execute(text("SELECT id FROM stripe_events")).scalars().all()


def _assert_unavailable(response) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.headers["Retry-After"].isdigit()
    body = response.get_json()
    assert set(body) == {"error", "message"}
    assert body["error"] == "database_unavailable"


def _event(name: str = "x"):
    return make_event("test.unknown.type", {"object": "thing", "id": name, "customer": "cus_db"})


def test_a_refused_database_is_503_and_the_same_app_recovers(proxied_app, proxy, engine):
    client = proxied_app.test_client()
    warm = _event("warm")
    assert post_event(client, warm).status_code == 200  # a pooled connection now exists

    proxy.set_mode("refuse")
    lost = _event("lost")
    _assert_unavailable(post_event(client, lost))
    _assert_unavailable(post_event(client, lost))  # and again, from a fresh connection attempt
    assert _stored_ids(engine) == [warm["id"]]

    proxy.set_mode("forward")
    response = post_event(client, lost)  # Stripe's retry
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "ignored"
    assert sorted(_stored_ids(engine)) == sorted([warm["id"], lost["id"]])


def test_a_database_refused_from_the_start_is_503(proxied_app, proxy, engine):
    proxy.set_mode("refuse")
    event = _event()
    _assert_unavailable(post_event(proxied_app.test_client(), event))
    proxy.set_mode("forward")
    assert post_event(proxied_app.test_client(), event).status_code == 200
    assert _stored_ids(engine) == [event["id"]]


def test_a_connection_lost_mid_transaction_leaves_nothing_half_written(
    proxied_app, proxy, engine, monkeypatch
):
    applied: list[str] = []

    def cut_then_apply(session, event, context):
        # The event row is inserted in this transaction; the database goes away before
        # the outcome is recorded and committed.
        proxy.set_mode("refuse")
        applied.append(event.id)
        return Outcome("processed")

    monkeypatch.setitem(handlers.HANDLERS, "test.db.cut", cut_then_apply)
    client = proxied_app.test_client()
    event = make_event("test.db.cut", {"object": "thing", "id": "x", "customer": "cus_cut"})

    _assert_unavailable(post_event(client, event))
    assert applied == [event["id"]]
    assert _stored_ids(engine) == []

    proxy.set_mode("forward")
    monkeypatch.setitem(handlers.HANDLERS, "test.db.cut", lambda s, e, c: Outcome("processed"))
    response = post_event(client, event)
    assert response.status_code == 200
    assert response.get_json()["status"] == "processed"
    with engine.connect() as connection:
        row = connection.execute(text("SELECT status, attempts FROM stripe_events")).one()
    assert (row.status, row.attempts) == ("processed", 1)


def _post_with_deadline(client, event, seconds: float):
    """Deliver from a thread; None if no answer came within `seconds` (the request hangs)."""
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(post_event(client, event)), daemon=True)
    thread.start()
    thread.join(seconds)
    return answers[0] if answers else None


def test_a_database_that_stops_answering_is_503_not_a_hang(proxied_app, proxy, engine):
    """A partition: connections stay open, nothing answers. DATABASE_TIMEOUT is 1 s here;
    the generous bound only keeps a regression from hanging the suite."""
    client = proxied_app.test_client()
    assert post_event(client, _event("warm")).status_code == 200  # a pooled, idle connection

    proxy.set_mode("blackhole")
    event = _event("partitioned")
    response = _post_with_deadline(client, event, seconds=15)
    assert response is not None, "the request hung on a silent database"
    _assert_unavailable(response)

    proxy.set_mode("forward")
    response = post_event(client, event)
    assert response.status_code == 200, response.get_json()
    assert event["id"] in _stored_ids(engine)


def test_a_new_connection_to_a_silent_database_is_503_not_a_hang(proxied_app, proxy, engine):
    proxy.set_mode("blackhole")
    event = _event("cold")
    response = _post_with_deadline(proxied_app.test_client(), event, seconds=15)
    assert response is not None, "the request hung connecting to a silent database"
    _assert_unavailable(response)
    proxy.set_mode("forward")
    assert post_event(proxied_app.test_client(), event).status_code == 200

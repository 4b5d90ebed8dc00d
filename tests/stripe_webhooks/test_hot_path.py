"""The webhook's fast path: one statement stores the event with its expected outcome, the
handler runs without a savepoint, and a failing handler is rolled back and run again
isolated, so the stored state is the same as on the careful path."""

from __future__ import annotations

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import text

from service.stripe_webhooks import handlers
from service.stripe_webhooks.handlers import Outcome

from ..helpers import make_event, post_event


def _row(engine, event_id: str):
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT * FROM stripe_events WHERE id = :id"), {"id": event_id}
        ).one()


def _write_then_fail(session, event, context):
    session.execute(
        text(
            "INSERT INTO accounts (id, plan, requests_per_minute, monthly_requests)"
            " VALUES ('acct_half_written', 'free', 10, 1000)"
        )
    )
    raise RuntimeError("the rule broke after a write")


def test_a_handler_failing_after_a_write_leaves_no_trace_but_the_failed_event(
    client, engine, monkeypatch
):
    monkeypatch.setitem(handlers.HANDLERS, "test.hot.broken", _write_then_fail)
    event = make_event("test.hot.broken", {"object": "thing", "id": "x"})
    response = post_event(client, event)
    assert response.status_code == 200
    assert response.get_json()["status"] == "failed"
    row = _row(engine, event["id"])
    assert (row.status, row.attempts, row.processed_at) == ("failed", 1, None)
    assert "RuntimeError: the rule broke after a write" in row.last_error
    with engine.connect() as connection:
        assert (
            connection.execute(
                text("SELECT count(*) FROM accounts WHERE id = 'acct_half_written'")
            ).scalar_one()
            == 0
        )


def test_a_pending_outcome_is_not_left_marked_processed(client, engine, monkeypatch):
    monkeypatch.setitem(
        handlers.HANDLERS, "test.hot.waiting", lambda s, e, c: Outcome(handlers.models.PENDING)
    )
    event = make_event("test.hot.waiting", {"object": "thing", "id": "x", "customer": "cus_w"})
    assert post_event(client, event).get_json()["status"] == "pending"
    row = _row(engine, event["id"])
    assert (row.status, row.attempts, row.processed_at) == ("pending", 1, None)


@pytest.mark.parametrize("handled", [True, False])
def test_an_event_applied_as_expected_is_written_once(client, engine, monkeypatch, handled):
    """Stored with its outcome in the INSERT: no UPDATE of the event row follows."""
    if handled:
        monkeypatch.setitem(
            handlers.HANDLERS,
            "test.hot.applied",
            lambda s, e, c: Outcome(handlers.models.PROCESSED),
        )
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    sa_event.listen(engine, "before_cursor_execute", record)
    try:
        event = make_event("test.hot.applied", {"object": "thing", "id": "x", "customer": "cus_a"})
        status = post_event(client, event).get_json()["status"]
    finally:
        sa_event.remove(engine, "before_cursor_execute", record)
    assert status == ("processed" if handled else "ignored")
    assert [s for s in statements if "stripe_events" in s and "UPDATE" in s] == []
    assert not any("SAVEPOINT" in s for s in statements)
    row = _row(engine, event["id"])
    assert (row.status, row.attempts) == (status, 1)
    assert row.processed_at is not None

"""Reading what the billing domain stored, for assertions."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from tests.helpers import post_event


def one(engine: Engine, sql: str, **params: Any) -> dict[str, Any] | None:
    with engine.connect() as c:
        row = c.execute(text(sql), params).mappings().first()
    return dict(row) if row is not None else None


def rows(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as c:
        return [dict(r) for r in c.execute(text(sql), params).mappings()]


def quota(engine: Engine, account_id: str) -> tuple[str, int, int, str] | None:
    """(plan, requests_per_minute, monthly_requests, source) through the read contract."""
    row = one(
        engine,
        "SELECT plan, requests_per_minute, monthly_requests, source FROM account_quotas"
        " WHERE account_id = :a",
        a=account_id,
    )
    if row is None:
        return None
    return (row["plan"], row["requests_per_minute"], row["monthly_requests"], row["source"])


def event_status(engine: Engine, event_id: str) -> dict[str, Any]:
    row = one(
        engine,
        "SELECT status, attempts, last_error, account_id FROM stripe_events WHERE id = :i",
        i=event_id,
    )
    assert row is not None, f"event {event_id} not stored"
    return row


def audit(engine: Engine, account_id: str) -> list[dict[str, Any]]:
    return rows(
        engine,
        "SELECT plan_before, plan_after, requests_per_minute_before, requests_per_minute_after,"
        " monthly_requests_before, monthly_requests_after, quota_source_before,"
        " quota_source_after, cause_event_id, cause_ops_action"
        " FROM audit_log WHERE account_id = :a ORDER BY id",
        a=account_id,
    )


def deliver(client: FlaskClient, event: dict[str, Any]) -> str:
    """POST a signed event; return the status the endpoint answered."""
    response = post_event(client, event)
    assert response.status_code == 200, response.get_json()
    status: str = response.get_json()["status"]
    return status


FREE = ("free", 10, 1_000, "plan")
PRO = ("pro", 30, 10_000, "plan")
SCALE = ("scale", 60, 100_000, "plan")
ENTERPRISE = ("enterprise", 120, 1_000_000, "plan")

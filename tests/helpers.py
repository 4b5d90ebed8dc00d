"""Building and signing Stripe events the way Stripe does, for tests and fixtures."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import Engine, text
from werkzeug.test import TestResponse

from service.stripe_webhooks.signature import sign_header

TEST_SECRET = "whsec_test_secret_for_the_suite"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stripe"


def make_event(
    event_type: str,
    data_object: dict[str, Any],
    *,
    event_id: str | None = None,
    created: int | None = None,
    livemode: bool = False,
    api_version: str = "2025-06-30.basil",
    previous_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A snapshot event as Stripe sends it."""
    data: dict[str, Any] = {"object": data_object}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": api_version,
        "created": created if created is not None else int(time.time()),
        "data": data,
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def load_fixture(name: str) -> dict[str, Any]:
    """A recorded event from tests/fixtures/stripe/NAME.json."""
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def signed_headers(
    body: bytes, secret: str = TEST_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {"Stripe-Signature": sign_header(body, secret, ts), "Content-Type": "application/json"}


def post_event(
    client: FlaskClient,
    event: dict[str, Any],
    *,
    secret: str = TEST_SECRET,
    timestamp: int | None = None,
) -> TestResponse:
    """POST `event` to the Stripe endpoint with a valid signature."""
    body = json.dumps(event).encode()
    return client.post(
        "/webhooks/stripe", data=body, headers=signed_headers(body, secret, timestamp)
    )


def store_event(
    engine: Engine,
    event: dict[str, Any],
    *,
    status: str,
    attempts: int = 1,
    next_attempt_at: datetime | None = None,
    last_error: str | None = None,
    account_id: str | None = None,
    received_at: str | None = None,
) -> str:
    """Insert `event` as an earlier delivery would have left it, in `status`."""
    obj = event["data"]["object"]
    customer = obj.get("id") if obj.get("object") == "customer" else obj.get("customer")
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO stripe_events (id, type, created, livemode, api_version, payload,
                       customer_id, status, attempts, next_attempt_at, last_error, account_id,
                       received_at)
                VALUES (:id, :type, to_timestamp(:created), :livemode, :api_version,
                        CAST(:payload AS jsonb), :customer, :status, :attempts,
                        :next_attempt_at, :last_error, :account_id,
                        COALESCE(CAST(:received_at AS timestamptz), now()))
                """
            ),
            {
                "id": event["id"],
                "type": event["type"],
                "created": event["created"],
                "livemode": event["livemode"],
                "api_version": event["api_version"],
                "payload": json.dumps(event),
                "customer": customer,
                "status": status,
                "attempts": attempts,
                "next_attempt_at": next_attempt_at,
                "last_error": last_error,
                "account_id": account_id,
                "received_at": received_at,
            },
        )
    return str(event["id"])

"""Storing events in a given state, for the ops read and replay tests."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, text


def store_event(
    engine: Engine,
    event: dict[str, Any],
    *,
    status: str,
    attempts: int = 1,
    last_error: str | None = None,
    account_id: str | None = None,
    received_at: str | None = None,
) -> str:
    """Insert `event` as the endpoint would have stored it, in `status`."""
    obj = event["data"]["object"]
    customer = obj.get("id") if obj.get("object") == "customer" else obj.get("customer")
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO stripe_events (id, type, created, livemode, api_version, payload,
                       customer_id, status, attempts, last_error, account_id, received_at)
                VALUES (:id, :type, to_timestamp(:created), :livemode, :api_version,
                        CAST(:payload AS jsonb), :customer, :status, :attempts, :last_error,
                        :account_id, COALESCE(CAST(:received_at AS timestamptz), now()))
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
                "last_error": last_error,
                "account_id": account_id,
                "received_at": received_at,
            },
        )
    return str(event["id"])

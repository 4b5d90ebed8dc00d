"""The references the service is measured against: the ceiling and the floor.

Both run as `gunicorn 'bench.ceiling:create_app()'` (or `create_floor_app()`) under the
service's own gunicorn settings: verify the Stripe signature with HMAC, decode the body
once, run one autocommit statement on one persistent psycopg connection per worker,
answer 200. No routing, no ORM, no processing.

- The ceiling inserts the raw event: the least a verified, durable receiver can do here.
- The floor also stores the event's object (`data.object`, keyed by its id) in the same
  statement: the least a receiver that applies what it receives before answering can
  do. The service does more still: it also writes the account and an audit entry when a
  plan changes, and keeps the indexes ops need. The floor tells what any design that
  applies before answering can reach on this machine.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import psycopg
from flask import Flask, Response, jsonify, request

from service.config import normalize_database_url
from service.stripe_webhooks.signature import SignatureError, verify

TABLE = "bench_ceiling_events"
SCHEMA = f"CREATE TABLE IF NOT EXISTS {TABLE} (id text PRIMARY KEY, payload jsonb NOT NULL)"
INSERT = f"INSERT INTO {TABLE} (id, payload) VALUES (%s, %s::jsonb) ON CONFLICT (id) DO NOTHING"

FLOOR_TABLE = "bench_floor_events"
FLOOR_OBJECTS = "bench_floor_objects"
_FLOOR_INSERT = f"""
    WITH stored AS (
        INSERT INTO {FLOOR_TABLE} (id, payload) VALUES (%(id)s, %(payload)s::jsonb)
        ON CONFLICT (id) DO NOTHING
        RETURNING id, payload -> 'data' -> 'object' AS object
    )
    INSERT INTO {FLOOR_OBJECTS} (id, event_id, object)
    SELECT stored.object ->> 'id', stored.id, stored.object FROM stored
    ON CONFLICT (id) DO UPDATE SET event_id = EXCLUDED.event_id, object = EXCLUDED.object
"""  # the interpolated names are the constants above


def create_app() -> Flask:
    """The ceiling: verify, insert the raw event, answer."""
    return _receiver(
        "bench.ceiling",
        [SCHEMA],
        lambda text, event: (INSERT, (event["id"], text)),
    )


def create_floor_app() -> Flask:
    """The floor: verify, insert the raw event and upsert its object, answer."""

    return _receiver(
        "bench.floor",
        [
            f"CREATE TABLE IF NOT EXISTS {FLOOR_TABLE}"
            " (id text PRIMARY KEY, payload jsonb NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {FLOOR_OBJECTS}"
            " (id text PRIMARY KEY, event_id text NOT NULL, object jsonb NOT NULL)",
        ],
        lambda text, event: (_FLOOR_INSERT, {"id": event["id"], "payload": text}),
    )


def _receiver(
    name: str,
    schema: list[str],
    statement: Callable[[str, dict[str, Any]], tuple[str, Any]],
) -> Flask:
    url = normalize_database_url(os.environ["DATABASE_URL"]).replace(
        "postgresql+psycopg://", "postgresql://"
    )
    secrets = tuple(os.environ["STRIPE_WEBHOOK_SECRET"].split(","))
    app = Flask(name)
    state: dict[str, psycopg.Connection] = {}

    def connection() -> psycopg.Connection:
        conn = state.get("conn")
        if conn is None or conn.closed:
            conn = psycopg.connect(url, autocommit=True)
            state["conn"] = conn
        return conn

    # Every worker runs this at boot; the lock keeps two from racing to create a table.
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))
        for create in schema:
            conn.execute(create)

    @app.post("/webhooks/stripe")
    def receive() -> tuple[Response, int]:
        body = request.get_data()
        try:
            verify(body, request.headers.get("Stripe-Signature"), secrets, 300, time.time())
        except SignatureError as exc:
            return jsonify(error="invalid_signature", message=str(exc)), 400
        text = body.decode()
        event = json.loads(text)
        query, params = statement(text, event)
        try:
            connection().execute(query, params)
        except psycopg.OperationalError:
            state.pop("conn", None)
            return jsonify(error="database_unavailable"), 503
        return jsonify(received=True, id=event["id"]), 200

    @app.get("/health/live")
    def live() -> tuple[Response, int]:
        return jsonify(status="pass"), 200

    return app

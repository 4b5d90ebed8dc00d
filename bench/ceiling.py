"""The ceiling: the least a verified, durable webhook receiver can do on this machine.

`gunicorn 'bench.ceiling:create_app()'` under the service's own gunicorn settings: verify
the Stripe signature with HMAC, insert the raw event in one committed transaction
(one autocommit INSERT on one persistent psycopg connection per worker), answer 200.
No routing, no ORM, no processing: the full service is measured against this.
"""

from __future__ import annotations

import json
import os
import time

import psycopg
from flask import Flask, Response, jsonify, request

from service.config import normalize_database_url
from service.stripe_webhooks.signature import SignatureError, verify

TABLE = "bench_ceiling_events"
_INSERT = f"INSERT INTO {TABLE} (id, payload) VALUES (%s, %s::jsonb) ON CONFLICT (id) DO NOTHING"


def create_app() -> Flask:
    url = normalize_database_url(os.environ["DATABASE_URL"]).replace(
        "postgresql+psycopg://", "postgresql://"
    )
    secrets = tuple(os.environ["STRIPE_WEBHOOK_SECRET"].split(","))
    app = Flask(__name__)
    state: dict[str, psycopg.Connection] = {}

    def connection() -> psycopg.Connection:
        conn = state.get("conn")
        if conn is None or conn.closed:
            conn = psycopg.connect(url, autocommit=True)
            state["conn"] = conn
        return conn

    # Every worker runs this at boot; the lock keeps two from racing to create the table.
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (TABLE,))
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id text PRIMARY KEY, payload jsonb NOT NULL)"
        )

    @app.post("/webhooks/stripe")
    def receive() -> tuple[Response, int]:
        body = request.get_data()
        try:
            verify(body, request.headers.get("Stripe-Signature"), secrets, 300, time.time())
        except SignatureError as exc:
            return jsonify(error="invalid_signature", message=str(exc)), 400
        text = body.decode()
        event_id = json.loads(text)["id"]
        try:
            connection().execute(_INSERT, (event_id, text))
        except psycopg.OperationalError:
            state.pop("conn", None)
            return jsonify(error="database_unavailable"), 503
        return jsonify(received=True, id=event_id), 200

    @app.get("/health/live")
    def live() -> tuple[Response, int]:
        return jsonify(status="pass"), 200

    return app

"""Two server processes receive one customer's events at the same time, each in its own
shuffled order and every event twice (once per server), as Stripe's retries and
duplicate deliveries can: the final state equals in-order delivery and nothing is
applied twice.

The servers are real gunicorn processes on the test database, so the customer's advisory
lock and the row locks are what keep them consistent, not anything in process memory.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, text

from service.cli import gunicorn_argv

from .billing import db
from .billing import stripe_objects as so
from .conftest import SEEDED_TABLES
from .helpers import TEST_SECRET, make_event, signed_headers

pytestmark = pytest.mark.slow

ROUNDS = 10
SUB_A = "sub_http_lifecycle"
SUB_B = "sub_http_second"


def one_customers_events() -> list[dict[str, Any]]:
    """One customer's stream in the order Stripe created it, one second apart.

    Subscription A goes through checkout, incomplete, paid, active, upgrade, payment
    failure, past due, recovery, downgrade, cancel at period end and deletion; a second
    subscription B on scale overlaps it, goes past due and recovers. Final plan: scale.
    """

    def sub(status: str, price: dict[str, Any], sub_id: str = SUB_A, **kw: Any) -> dict[str, Any]:
        return so.subscription(status, price, sub_id=sub_id, **kw)

    def inv(status: str, invoice_id: str, sub_id: str = SUB_A, **kw: Any) -> dict[str, Any]:
        return so.invoice(status, invoice_id=invoice_id, sub_id=sub_id, **kw)

    steps: list[tuple[str, dict[str, Any]]] = [
        ("checkout.session.completed", so.checkout_session()),
        ("customer.subscription.created", sub("incomplete", so.PRO)),
        ("invoice.paid", inv("paid", "in_http_1")),
        ("customer.subscription.updated", sub("active", so.PRO)),
        ("customer.subscription.updated", sub("active", so.ENTERPRISE)),
        ("customer.subscription.created", sub("active", so.SCALE, SUB_B)),
        ("invoice.payment_failed", inv("open", "in_http_2", billing_reason="subscription_cycle")),
        ("customer.subscription.updated", sub("past_due", so.ENTERPRISE)),
        ("invoice.paid", inv("paid", "in_http_2", attempt_count=2)),
        ("customer.subscription.updated", sub("active", so.ENTERPRISE)),
        ("customer.subscription.updated", sub("past_due", so.SCALE, SUB_B)),
        ("customer.subscription.updated", sub("active", so.PRO)),
        ("customer.subscription.updated", sub("active", so.PRO, cancel_at_period_end=True)),
        ("customer.subscription.updated", sub("active", so.SCALE, SUB_B)),
        ("customer.subscription.deleted", sub("canceled", so.PRO, canceled_at=so.T0 + 99)),
    ]
    return [
        make_event(kind, obj, event_id=f"evt_http_{n:02d}", created=so.T0 + n, api_version=so.BASIL)
        for n, (kind, obj) in enumerate(steps)
    ]


def state(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Everything billing stored, less the wall-clock timestamps of when it was written."""
    queries = {
        "accounts": "SELECT id, plan, requests_per_minute, monthly_requests, quota_source"
        " FROM accounts ORDER BY id",
        "customers": "SELECT id, account_id, email, deleted FROM stripe_customers ORDER BY id",
        "subscriptions": "SELECT id, customer_id, account_id, status, price_id, plan,"
        " current_period_end, cancel_at_period_end, canceled_at, deleted, applied_event_id"
        " FROM subscriptions ORDER BY id",
        "invoices": "SELECT id, subscription_id, status, amount_paid, attempt_count,"
        " applied_event_id FROM invoices ORDER BY id",
        "quotas": "SELECT account_id, plan, requests_per_minute, monthly_requests, source"
        " FROM account_quotas ORDER BY account_id",
    }
    return {name: db.rows(engine, sql) for name, sql in queries.items()}


def empty_tables(engine: Engine) -> None:
    with engine.begin() as c:
        tables = c.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).scalars()
        names = [f'"{t}"' for t in tables if t not in SEEDED_TABLES]
        c.execute(text(f"TRUNCATE {', '.join(names)} CASCADE"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(database_url: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": TEST_SECRET,
        "LOG_LEVEL": "WARNING",
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="webhooks-test-prometheus-"),
    }
    process = subprocess.Popen(
        gunicorn_argv(f"127.0.0.1:{port}"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, port


def wait_until_serving(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health/live")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not start")


@pytest.fixture
def two_servers(database_url: str) -> Iterator[list[int]]:
    servers = [start_server(database_url) for _ in range(2)]
    try:
        for process, port in servers:
            wait_until_serving(process, port)
        yield [port for _, port in servers]
    finally:
        for process, _ in servers:
            process.terminate()
        for process, _ in servers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def deliver_all(port: int, events: list[dict[str, Any]], barrier: threading.Barrier) -> list:
    """POST each event in turn on one keep-alive connection; return (event id, answer)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    answers = []
    barrier.wait(timeout=60)
    for event in events:
        body = json.dumps(event).encode()
        connection.request("POST", "/webhooks/stripe", body=body, headers=signed_headers(body))
        response = connection.getresponse()
        answer = json.loads(response.read())
        answers.append((event["id"], response.status, answer.get("status")))
    connection.close()
    return answers


def test_two_servers_delivering_one_customers_events_converge_on_in_order_state(
    client, engine, two_servers
):
    events = one_customers_events()
    for event in events:
        db.deliver(client, event)
    expected = state(engine)
    assert expected["quotas"] == [
        {
            "account_id": so.ACCOUNT_ID,
            "plan": "scale",
            "requests_per_minute": 60,
            "monthly_requests": 100_000,
            "source": "plan",
        }
    ]
    assert {s["id"]: s["status"] for s in expected["subscriptions"]} == {
        SUB_A: "canceled",
        SUB_B: "active",
    }

    for seed in range(ROUNDS):
        empty_tables(engine)
        rng = random.Random(seed)
        orders = [rng.sample(events, len(events)) for _ in two_servers]
        barrier = threading.Barrier(len(two_servers))
        with ThreadPoolExecutor(len(two_servers)) as pool:
            futures = [
                pool.submit(deliver_all, port, order, barrier)
                for port, order in zip(two_servers, orders, strict=True)
            ]
            results = [future.result(timeout=120) for future in futures]

        answers = [a for server in results for a in server]
        assert len(answers) == 2 * len(events), f"seed {seed}: a delivery thread failed"
        assert all(code == 200 for _, code, _ in answers), answers
        assert state(engine) == expected, f"seed {seed}"

        # Nothing applied twice: at most one delivery of each event was applied, every
        # event ended processed, and no plan change was recorded twice for one event.
        applied = Counter(eid for eid, _, status in answers if status == "processed")
        assert max(applied.values()) == 1, f"seed {seed}: {applied}"
        stored = db.rows(engine, "SELECT id, status FROM stripe_events")
        assert {r["id"] for r in stored} == {e["id"] for e in events}
        assert {r["status"] for r in stored} == {"processed"}, f"seed {seed}: {stored}"
        causes = Counter(
            a["cause_event_id"] for a in db.audit(engine, so.ACCOUNT_ID) if a["cause_event_id"]
        )
        assert not causes or max(causes.values()) == 1, f"seed {seed}: {causes}"

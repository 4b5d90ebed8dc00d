"""The worker: retries of failed events with backoff, `dead` after the last attempt,
pending events applied once their customer is linked, and the claim protocol
(customer advisory lock first, then the event row with SKIP LOCKED).

The handler outcomes here come from a test handler registered for one event type, so the
worker's mechanics are asserted independently of billing rules; the billing handlers'
own failure (an unknown price) is covered in tests/test_worker_billing.py.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from service.cli import cli
from service.db import make_engine, transaction
from service.stripe_webhooks import handlers
from service.stripe_webhooks.handlers import Outcome
from service.stripe_webhooks.processing import ProcessingContext, lock_customer
from service.stripe_webhooks.worker import Attempt, Worker

from .helpers import TEST_SECRET, make_event, post_event, store_event
from .tcp_proxy import TcpProxy

FLAKY = "test.flaky"


class FlakyHandler:
    """Fails while `broken`, like a handler missing configuration; then processes."""

    def __init__(self) -> None:
        self.broken = True
        self.calls: list[str] = []

    def __call__(self, session: Session, event: Any, context: ProcessingContext) -> Outcome:
        self.calls.append(event.id)
        if self.broken:
            raise LookupError(f"no plan configured for {event.id}")
        return Outcome("processed", account_id="acct_1")


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> FlakyHandler:
    handler = FlakyHandler()
    monkeypatch.setitem(handlers.HANDLERS, FLAKY, handler)
    return handler


@pytest.fixture
def settings(settings):
    """The suite's settings with a short backoff (10 s base) and four attempts."""
    return settings.replace(worker_backoff_seconds=10.0, worker_max_attempts=4)


@pytest.fixture
def worker(engine: Engine, settings) -> Worker:
    return Worker(engine, ProcessingContext(settings=settings), sleep=lambda s: None)


def event_row(engine: Engine, event_id: str) -> Any:
    with engine.connect() as c:
        return c.execute(
            text(
                "SELECT status, attempts, last_error, next_attempt_at, processed_at, account_id "
                "FROM stripe_events WHERE id = :id"
            ),
            {"id": event_id},
        ).one()


def make_due(engine: Engine, event_id: str) -> None:
    """Let the backoff pass without waiting for it."""
    with engine.begin() as c:
        c.execute(
            text(
                "UPDATE stripe_events SET next_attempt_at = now() - interval '1 second' "
                "WHERE id = :id"
            ),
            {"id": event_id},
        )


def link_customer(engine: Engine, customer_id: str, account_id: str) -> None:
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO accounts (id, plan, requests_per_minute, monthly_requests) "
                "VALUES (:a, 'free', 10, 1000) ON CONFLICT DO NOTHING"
            ),
            {"a": account_id},
        )
        c.execute(
            text("INSERT INTO stripe_customers (id, account_id) VALUES (:c, :a)"),
            {"c": customer_id, "a": account_id},
        )


def flaky_event(customer: str = "cus_1", **kwargs: Any) -> dict[str, Any]:
    return make_event(FLAKY, {"object": "thing", "id": "thing_1", "customer": customer}, **kwargs)


def test_a_failed_event_is_retried_once_its_cause_is_fixed(client, engine, worker, flaky):
    event = flaky_event()
    assert post_event(client, event).get_json()["status"] == "failed"
    failed = event_row(engine, event["id"])
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert "no plan configured" in failed.last_error

    flaky.broken = False
    make_due(engine, event["id"])
    result = worker.drain()

    assert result.statuses == {"processed": 1}
    row = event_row(engine, event["id"])
    assert (row.status, row.attempts, row.account_id) == ("processed", 2, "acct_1")
    assert row.last_error is None
    assert row.next_attempt_at is None
    assert row.processed_at is not None


def test_failures_back_off_exponentially_then_the_event_is_dead(client, engine, worker, flaky):
    # WORKER_BACKOFF_SECONDS=10, WORKER_MAX_ATTEMPTS=4: waits of 10 s, 20 s, 40 s, then dead.
    event = flaky_event()
    before = datetime.now(UTC)
    post_event(client, event)
    waits = []
    for expected_attempts in (1, 2, 3):
        row = event_row(engine, event["id"])
        assert (row.status, row.attempts) == ("failed", expected_attempts)
        waits.append((row.next_attempt_at - before).total_seconds())
        make_due(engine, event["id"])
        before = datetime.now(UTC)
        assert worker.drain().attempted == 1

    # Each wait is the base times 2^(attempts-1), measured from just before the attempt.
    for wait, base in zip(waits, (10, 20, 40), strict=True):
        assert base <= wait < base + 5
    dead = event_row(engine, event["id"])
    assert (dead.status, dead.attempts, dead.next_attempt_at) == ("dead", 4, None)
    assert "no plan configured" in dead.last_error

    # A dead event is left for ops (replay); the worker never picks it again.
    flaky.broken = False
    assert worker.drain().attempted == 0
    assert event_row(engine, event["id"]).status == "dead"


def test_the_backoff_is_capped_at_six_hours(client, engine, settings, flaky):
    event = flaky_event()
    store_event(
        engine,
        event,
        status="failed",
        attempts=20,
        next_attempt_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    context = ProcessingContext(settings=settings.replace(worker_max_attempts=100))
    Worker(engine, context).drain()
    row = event_row(engine, event["id"])
    assert row.attempts == 21
    wait = row.next_attempt_at - datetime.now(UTC)
    assert timedelta(hours=5, minutes=59) < wait <= timedelta(hours=6)


def test_events_not_yet_due_are_left_untouched(engine, worker, flaky):
    flaky.broken = False
    later = datetime.now(UTC) + timedelta(minutes=5)
    waiting = flaky_event()
    store_event(engine, waiting, status="failed", next_attempt_at=later, last_error="boom")
    for status in ("processed", "ignored", "dead"):
        store_event(engine, flaky_event(event_id=f"evt_{status}"), status=status)

    result = worker.drain()

    assert result.attempted == 0
    assert flaky.calls == []
    row = event_row(engine, waiting["id"])
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, "boom")
    assert row.next_attempt_at == later
    for status in ("processed", "ignored", "dead"):
        assert event_row(engine, f"evt_{status}").status == status


def test_due_events_are_attempted_oldest_due_first(engine, worker, flaky):
    flaky.broken = False
    now = datetime.now(UTC)
    for n, minutes_ago in enumerate([1, 30, 10]):
        store_event(
            engine,
            flaky_event(customer=f"cus_{n}", event_id=f"evt_{n}"),
            status="failed",
            next_attempt_at=now - timedelta(minutes=minutes_ago),
        )

    worker.drain()

    assert flaky.calls == ["evt_1", "evt_2", "evt_0"]


def test_a_pending_event_is_applied_once_its_customer_is_linked(engine, worker, flaky):
    flaky.broken = False
    event = flaky_event(customer="cus_later")
    store_event(engine, event, status="pending", attempts=1)

    assert worker.drain().attempted == 0
    assert event_row(engine, event["id"]).status == "pending"

    link_customer(engine, "cus_later", "acct_1")
    assert worker.drain().statuses == {"processed": 1}
    row = event_row(engine, event["id"])
    assert (row.status, row.attempts, row.account_id) == ("processed", 2, "acct_1")
    assert worker.drain().attempted == 0


def test_a_linked_event_that_still_waits_is_deferred_not_retried_every_poll(
    engine, worker, monkeypatch
):
    monkeypatch.setitem(handlers.HANDLERS, FLAKY, lambda s, e, c: Outcome("pending"))
    event = flaky_event(customer="cus_linked")
    store_event(engine, event, status="pending", attempts=1)
    link_customer(engine, "cus_linked", "acct_1")

    assert worker.drain().statuses == {"pending": 1}
    row = event_row(engine, event["id"])
    assert (row.status, row.attempts) == ("pending", 2)
    # Backoff base 10 s times 2^(2-1).
    wait = (row.next_attempt_at - datetime.now(UTC)).total_seconds()
    assert 15 < wait <= 20
    assert worker.drain().attempted == 0


def test_the_worker_skips_a_customer_whose_lock_is_held_by_a_delivery(engine, worker, flaky):
    """The worker's try-lock uses the same key as processing.lock_customer."""
    flaky.broken = False
    event = flaky_event(customer="cus_busy")
    store_event(engine, event, status="failed", next_attempt_at=datetime.now(UTC))

    with transaction(engine) as session:
        lock_customer(session, "cus_busy")
        assert worker.attempt(event["id"], "cus_busy") == (Attempt.BUSY, None)
        assert event_row(engine, event["id"]).attempts == 1
    assert worker.attempt(event["id"], "cus_busy") == (Attempt.DONE, "processed")


def test_an_event_row_claimed_elsewhere_is_skipped(engine, worker, flaky):
    flaky.broken = False
    event = flaky_event(customer="cus_row")
    store_event(engine, event, status="failed", next_attempt_at=datetime.now(UTC))

    with engine.connect() as other:
        other.execute(
            text("SELECT 1 FROM stripe_events WHERE id = :id FOR UPDATE"), {"id": event["id"]}
        )
        assert worker.attempt(event["id"], "cus_row") == (Attempt.GONE, None)
        other.rollback()
    assert flaky.calls == []
    assert worker.attempt(event["id"], "cus_row") == (Attempt.DONE, "processed")


def test_a_drain_attempts_each_event_once_even_with_zero_backoff(engine, settings, flaky):
    context = ProcessingContext(settings=settings.replace(worker_backoff_seconds=0.0))
    for n in range(5):
        store_event(
            engine,
            flaky_event(event_id=f"evt_{n}", customer=f"cus_{n}"),
            status="failed",
            next_attempt_at=datetime.now(UTC),
        )

    result = Worker(engine, context, batch=2).drain()

    assert result.statuses == {"failed": 5}
    assert sorted(flaky.calls) == [f"evt_{n}" for n in range(5)]


def test_worker_once_from_the_command_line(runner, engine, flaky):
    flaky.broken = False
    store_event(engine, flaky_event(), status="failed", next_attempt_at=datetime.now(UTC))

    result = runner.invoke(cli, ["worker", "--once", "--batch", "10"])

    assert result.exit_code == 0, result.output
    assert result.output.strip() == "1 event attempted (processed 1)"
    again = runner.invoke(cli, ["worker", "--once"])
    assert again.output.strip() == "no events due"


def test_worker_batch_must_be_positive(runner):
    result = runner.invoke(cli, ["worker", "--once", "--batch", "0"])
    assert result.exit_code == 2
    assert "--batch" in result.output


@pytest.mark.slow
def test_the_worker_process_stops_cleanly_on_sigterm(database_url, engine):
    event = make_event("charge.succeeded", {"object": "charge", "id": "ch_1", "customer": "cus_1"})
    store_event(engine, event, status="failed", next_attempt_at=datetime.now(UTC))
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": TEST_SECRET,
        "WORKER_POLL_SECONDS": "0.2",
        "LOG_LEVEL": "INFO",
    }
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "webhooks"), "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The worker picks up the due event (an unhandled type: ignored), then idles.
        deadline = time.monotonic() + 30
        while event_row(engine, event["id"]).status == "failed":
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the worker never attempted the event: {process.communicate()}")
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    keys = [entry["msg"] for entry in logs]
    assert keys[0] == "stripe.worker.started"
    assert {"stripe.worker.attempt", "stripe.event.ignored", "stripe.worker.stopping"} <= set(keys)
    assert keys[-1] == "stripe.worker.stopped"
    attempt = next(entry for entry in logs if entry["msg"] == "stripe.worker.attempt")
    assert attempt["event_id"] == event["id"]
    assert event_row(engine, event["id"]).status == "ignored"


def test_two_engines_see_one_claim(database_url, engine, settings, flaky):
    """A second worker (its own engine, as on another machine) finds nothing left."""
    flaky.broken = False
    store_event(engine, flaky_event(), status="failed", next_attempt_at=datetime.now(UTC))
    other_engine = create_engine(database_url)
    try:
        first = Worker(engine, ProcessingContext(settings=settings)).drain()
        second = Worker(other_engine, ProcessingContext(settings=settings)).drain()
    finally:
        other_engine.dispose()
    assert (first.attempted, second.attempted) == (1, 0)


class _Messages(logging.Handler):
    """Records the dotted keys the worker logs."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.keys.append(record.getMessage())


@pytest.mark.slow
@pytest.mark.parametrize("outage", ["refuse", "blackhole"])
def test_the_worker_rides_out_a_database_outage(database_url, engine, settings, flaky, outage):
    """Lost connections fail a poll, not the worker: it logs and carries on afterwards."""
    flaky.broken = False
    event = flaky_event()
    store_event(engine, event, status="failed", next_attempt_at=datetime.now(UTC))
    proxy = TcpProxy(database_url)
    quick = settings.replace(database_timeout=1.0, worker_poll_seconds=0.05)
    proxied = make_engine(proxy.url_for(database_url), quick)
    messages = _Messages()
    worker_log = logging.getLogger("service.stripe_webhooks.worker")
    worker_log.addHandler(messages)
    worker_log.setLevel(logging.INFO)
    worker = Worker(proxied, ProcessingContext(settings=quick))
    thread = threading.Thread(target=worker.run, daemon=True)
    try:
        proxy.set_mode(outage)
        thread.start()
        deadline = time.monotonic() + 30
        while messages.keys.count("stripe.worker.drain_failed") < 2:
            assert time.monotonic() < deadline, messages.keys
            time.sleep(0.05)
        assert event_row(engine, event["id"]).status == "failed"

        proxy.set_mode("forward")
        proxy.cut_connections()  # the blackholed ones: a restarted server drops them too
        while event_row(engine, event["id"]).status != "processed":
            assert time.monotonic() < deadline + 30, messages.keys
            time.sleep(0.05)
    finally:
        worker.stop.set()
        thread.join(timeout=30)
        worker_log.removeHandler(messages)
        worker_log.setLevel(logging.NOTSET)
        proxied.dispose()
        proxy.close()
    assert not thread.is_alive()
    assert messages.keys[0] == "stripe.worker.started"
    assert "stripe.worker.attempt" in messages.keys
    assert messages.keys[-1] == "stripe.worker.stopped"
    assert event_row(engine, event["id"]).attempts == 2


def test_an_event_that_times_out_in_the_database_fails_without_stopping_the_drain(
    engine, worker, flaky, monkeypatch
):
    """A statement timeout rolls the attempt back; it is recorded as a failed attempt
    (backoff, then dead) and the events behind it are still applied."""

    def slow(session: Session, event: Any, context: ProcessingContext) -> Outcome:
        session.execute(text("SET LOCAL statement_timeout = '50ms'"))
        session.execute(text("SELECT pg_sleep(2)"))
        return Outcome("processed")

    monkeypatch.setitem(handlers.HANDLERS, "test.slow", slow)
    flaky.broken = False
    now = datetime.now(UTC)
    stuck = make_event("test.slow", {"object": "thing", "id": "t", "customer": "cus_slow"})
    store_event(engine, stuck, status="failed", next_attempt_at=now - timedelta(minutes=5))
    behind = flaky_event(customer="cus_other")
    store_event(engine, behind, status="failed", next_attempt_at=now - timedelta(minutes=1))

    result = worker.drain()

    assert result.statuses == {"failed": 1, "processed": 1}
    row = event_row(engine, stuck["id"])
    assert (row.status, row.attempts) == ("failed", 2)
    assert "QueryCanceled" in row.last_error
    assert row.next_attempt_at > datetime.now(UTC)
    assert event_row(engine, behind["id"]).status == "processed"

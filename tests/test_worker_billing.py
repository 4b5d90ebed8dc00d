"""The worker with the real billing handlers: an unknown price fails an event until
PLAN_PRICE_MAP names it, and a subscription waiting for its customer is applied once ops
link the customer. Several `webhooks worker --once` processes share one such backlog.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from service.billing.stripe_objects import link_customer
from service.db import transaction
from service.stripe_webhooks.processing import ProcessingContext
from service.stripe_webhooks.worker import Worker

from .billing import db
from .billing import stripe_objects as so
from .helpers import TEST_SECRET, make_event

WEBHOOKS = str(Path(sys.executable).parent / "webhooks")


def make_all_due(engine) -> None:
    with engine.begin() as c:
        c.execute(
            text(
                "UPDATE stripe_events SET next_attempt_at = now() - interval '1 second'"
                " WHERE status = 'failed'"
            )
        )


def wait_for_lock_waiters(engine, count: int, processes: list) -> None:
    """Wait until `count` sessions of the service are blocked on a lock."""
    deadline = time.monotonic() + 120
    while True:
        with engine.connect() as c:
            waiting = c.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name = 'billing-webhooks' AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        if waiting >= count:
            return
        for process in processes:
            assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{waiting} of {count} workers reached the gate"
        time.sleep(0.05)


def subscription_event(event_id: str, created: int, **kwargs) -> dict:
    return make_event(
        "customer.subscription.updated",
        so.subscription(**kwargs),
        event_id=event_id,
        created=created,
        api_version=so.BASIL,
    )


def test_an_unknown_price_fails_the_event_until_the_mapping_names_it(client, engine, settings):
    db.deliver(
        client, make_event("checkout.session.completed", so.checkout_session(), created=so.T0)
    )
    event = subscription_event("evt_unmapped", so.T0 + 10, status="active", price_obj=so.UNMAPPED)

    assert db.deliver(client, event) == "failed"
    failed = db.event_status(engine, "evt_unmapped")
    assert failed["attempts"] == 1
    assert so.UNMAPPED["id"] in failed["last_error"]
    assert "PLAN_PRICE_MAP" in failed["last_error"]
    assert db.quota(engine, so.ACCOUNT_ID) == db.FREE

    # Still unknown when due again: failed once more, with the next, longer wait.
    make_all_due(engine)
    assert Worker(engine, ProcessingContext(settings=settings)).drain().statuses == {"failed": 1}
    assert db.event_status(engine, "evt_unmapped")["attempts"] == 2

    fixed = settings.replace(plan_price_map={so.UNMAPPED["id"]: "scale"})
    make_all_due(engine)
    result = Worker(engine, ProcessingContext(settings=fixed)).drain()

    assert result.statuses == {"processed": 1}
    assert db.event_status(engine, "evt_unmapped") == {
        "status": "processed",
        "attempts": 3,
        "last_error": None,
        "account_id": so.ACCOUNT_ID,
    }
    assert db.quota(engine, so.ACCOUNT_ID) == db.SCALE
    changes = [
        (a["plan_before"], a["plan_after"], a["cause_event_id"])
        for a in db.audit(engine, so.ACCOUNT_ID)
    ]
    assert ("free", "scale", "evt_unmapped") in changes


def test_a_subscription_waiting_for_its_customer_is_applied_after_ops_link_it(
    client, engine, settings
):
    event = subscription_event("evt_waiting", so.T0 + 10, status="active", price_obj=so.PRO)
    assert db.deliver(client, event) == "pending"

    worker = Worker(engine, ProcessingContext(settings=settings))
    assert worker.drain().attempted == 0

    # A link made outside any event (ops attaching the customer by hand) leaves the
    # waiting event to the worker.
    with transaction(engine) as session:
        link_customer(session, so.CUSTOMER_ID, so.ACCOUNT_ID)
    assert worker.drain().statuses == {"processed": 1}

    assert db.event_status(engine, "evt_waiting")["status"] == "processed"
    assert db.quota(engine, so.ACCOUNT_ID) == db.PRO
    assert [a["cause_event_id"] for a in db.audit(engine, so.ACCOUNT_ID)][-1] == "evt_waiting"


CUSTOMERS = 100
SNAPSHOTS = 3  # per customer: incomplete, then active, then active with cancel_at_period_end


def _customer(n: int) -> tuple[str, str, str]:
    return f"acct_race_{n:03d}", f"cus_race_{n:03d}", f"sub_race_{n:03d}"


@pytest.mark.slow
def test_two_worker_commands_apply_a_failed_backlog_exactly_once(client, engine, database_url):
    """300 events failed on an unknown price; two `webhooks worker --once` processes run
    with the mapping fixed: each event is applied once, each account upgraded once."""
    for n in range(CUSTOMERS):
        account, customer, sub = _customer(n)
        checkout = so.checkout_session(account_id=account, customer=customer, session_id=f"cs_{n}")
        assert db.deliver(client, make_event("checkout.session.completed", checkout)) == "processed"
        steps = [
            {"status": "incomplete"},
            {"status": "active"},
            {"status": "active", "cancel_at_period_end": True},
        ]
        for step, fields in enumerate(steps):
            event = subscription_event(
                f"evt_race_{n:03d}_{step}",
                so.T0 + 10 * (step + 1),
                sub_id=sub,
                customer=customer,
                price_obj=so.UNMAPPED,
                **fields,
            )
            assert db.deliver(client, event) == "failed"
    make_all_due(engine)

    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": TEST_SECRET,
        "PLAN_PRICE_MAP": f"{so.UNMAPPED['id']}=pro",
        "LOG_LEVEL": "WARNING",
        # Waiting at the start gate below must not trip the statement or lock timeout.
        "DATABASE_TIMEOUT": "60",
    }
    # Start gate: while this transaction holds the table, both workers' first query
    # waits; releasing it once both wait makes their drains overlap however slowly
    # each process started.
    with engine.connect() as gate:
        gate.execute(text("LOCK TABLE stripe_events IN EXCLUSIVE MODE"))
        workers = [
            subprocess.Popen(
                [WEBHOOKS, "worker", "--once", "--batch", "20"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        wait_for_lock_waiters(engine, 2, workers)
        gate.rollback()
    outputs = [w.communicate(timeout=180) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    attempted = []
    for stdout, _ in outputs:
        match = re.fullmatch(r"(\d+) events? attempted \(processed \1\)", stdout.strip())
        assert match, stdout
        attempted.append(int(match[1]))
    assert sum(attempted) == CUSTOMERS * SNAPSHOTS
    assert min(attempted) > 0, attempted  # both took part

    events = db.rows(
        engine,
        "SELECT status, attempts, count(*) AS n FROM stripe_events"
        " WHERE type = 'customer.subscription.updated' GROUP BY 1, 2",
    )
    assert events == [{"status": "processed", "attempts": 2, "n": CUSTOMERS * SNAPSHOTS}]
    for n in range(CUSTOMERS):
        account, _, sub = _customer(n)
        assert db.quota(engine, account) == db.PRO
        stored = db.one(
            engine,
            "SELECT status, plan, cancel_at_period_end FROM subscriptions WHERE id = :s",
            s=sub,
        )
        assert stored == {"status": "active", "plan": "pro", "cancel_at_period_end": True}
        upgrades = [a for a in db.audit(engine, account) if a["plan_after"] == "pro"]
        assert len(upgrades) == 1, upgrades

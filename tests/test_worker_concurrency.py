"""Several workers over one backlog: every due event is attempted exactly once.

Each worker runs in its own process with its own engine, as on separate machines, and
they are released together so their drains really overlap.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from service.config import Settings
from service.stripe_webhooks.processing import ProcessingContext
from service.stripe_webhooks.worker import Worker

from .helpers import TEST_SECRET, make_event

pytestmark = pytest.mark.slow

BACKLOG = 400
CUSTOMERS = 40
WORKERS = 2


class _Attempts(logging.Handler):
    """Collects the ids of the events this process attempted, from the worker's log."""

    def __init__(self) -> None:
        super().__init__()
        self.event_ids: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "stripe.worker.attempt":
            self.event_ids.append(record.__dict__["event_id"])


def race_worker(database_url: str, batch: int, barrier: Any, results: Any) -> None:
    """One worker process: wait for the others, drain, report what it attempted."""
    collector = _Attempts()
    logger = logging.getLogger("service.stripe_webhooks.worker")
    logger.setLevel(logging.INFO)
    logger.addHandler(collector)
    engine = create_engine(database_url, pool_size=1)
    settings = Settings(stripe_webhook_secrets=(TEST_SECRET,), database_url=database_url)
    worker = Worker(engine, ProcessingContext(settings=settings), batch=batch)
    barrier.wait(timeout=60)
    result = worker.drain()
    engine.dispose()
    results.put((collector.event_ids, result.statuses))


def store_backlog(database_url: str) -> list[str]:
    """BACKLOG failed events, due now, spread over CUSTOMERS customers and none.

    `charge.succeeded` has no handler, so a successful attempt marks it `ignored`: the
    race is about claiming, not about billing rules.
    """
    engine = create_engine(database_url)
    due = datetime.now(UTC) - timedelta(seconds=5)
    rows = []
    for n in range(BACKLOG):
        customer = f"cus_{n % CUSTOMERS:03d}" if n % 10 else None
        obj = {"object": "charge", "id": f"ch_{n:04d}", "customer": customer}
        event = make_event(
            "charge.succeeded", obj, event_id=f"evt_{n:04d}", created=1_700_000_000 + n
        )
        rows.append(
            {
                "id": event["id"],
                "payload": json.dumps(event),
                "customer_id": customer,
                "next_attempt_at": due,
            }
        )
    with engine.begin() as c:
        c.execute(
            text(
                """
                INSERT INTO stripe_events (id, type, created, livemode, payload, customer_id,
                                           status, attempts, last_error, next_attempt_at)
                VALUES (:id, 'charge.succeeded', now(), false, CAST(:payload AS jsonb),
                        :customer_id, 'failed', 1, 'earlier failure', :next_attempt_at)
                """
            ),
            rows,
        )
    engine.dispose()
    return [row["id"] for row in rows]


@pytest.mark.parametrize("batch", [1, 25, 100])
def test_two_worker_processes_attempt_every_event_of_a_backlog_exactly_once(
    database_url, engine, batch
):
    event_ids = store_backlog(database_url)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WORKERS)
    results = context.Queue()
    processes = [
        context.Process(target=race_worker, args=(database_url, batch, barrier, results))
        for _ in range(WORKERS)
    ]
    for process in processes:
        process.start()
    reports = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0

    attempted = Counter(event_id for ids, _ in reports for event_id in ids)
    # Nothing lost, nothing attempted twice, and both workers took part in the race.
    assert set(attempted) == set(event_ids)
    assert max(attempted.values()) == 1
    assert all(ids for ids, _ in reports), [len(ids) for ids, _ in reports]
    assert sum(statuses.get("ignored", 0) for _, statuses in reports) == BACKLOG
    with engine.connect() as c:
        rows = c.execute(
            text("SELECT status, attempts, count(*) FROM stripe_events GROUP BY 1, 2")
        ).all()
    # One more attempt each, recorded once: the database agrees with the workers' logs.
    assert [tuple(row) for row in rows] == [("ignored", 2, BACKLOG)]

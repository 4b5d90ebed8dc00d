"""Prometheus metrics: webhook outcomes, signature failures, latency, and the backlog.

Counters and the histogram are recorded where things happen (the webhook view, replays).
Under gunicorn each worker is its own process, so the figures would be per worker; with
`PROMETHEUS_MULTIPROC_DIR` set (service/gunicorn_conf.py sets it) every process writes its
samples to files there and `GET /metrics` adds them up, so a scrape sees the whole service.

The backlog gauges are not recorded anywhere: they are read from PostgreSQL when Prometheus
scrapes, with one cheap grouped query on the backlog's partial index, so every worker
answers the same figures and no process has to keep them up to date.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

from flask import Blueprint, Response, current_app
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)

EVENTS_RECEIVED = Counter(
    "stripe_events_received",
    "Verified Stripe events by type and the status they were answered with",
    ["type", "outcome"],
)
SIGNATURE_FAILURES = Counter(
    "stripe_signature_failures",
    "Requests to the Stripe endpoint rejected for their signature",
)
PROCESSING_SECONDS = Histogram(
    "stripe_event_processing_seconds",
    "Time to store and apply one Stripe event, database transaction included",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
EVENTS_REPLAYED = Counter(
    "stripe_events_replayed",
    "Stored events processed again by ops (CLI, page or API), by resulting status",
    ["outcome"],
)

# The statuses the backlog index covers (see migrations/versions/0001): counting them is
# an index scan however large the table grows. `dead` is left out for that reason; ops
# see dead events in the ops page and `webhooks events list --status dead`.
BACKLOG_STATUSES = ("received", "pending", "failed")
_BACKLOG_QUERY = text(
    """
    SELECT status, count(*) AS n, EXTRACT(EPOCH FROM now() - min(received_at)) AS oldest
      FROM stripe_events
     WHERE status IN ('received', 'pending', 'failed')
     GROUP BY status
    """
)
# A scrape must never hang on a busy database: Prometheus would time out and mark us down.
BACKLOG_QUERY_TIMEOUT_MS = 1000


def observe_webhook(event_type: str, outcome: str, seconds: float) -> None:
    """Count one answered delivery and how long storing and applying it took."""
    EVENTS_RECEIVED.labels(type=event_type, outcome=outcome).inc()
    PROCESSING_SECONDS.observe(seconds)


def observe_replay(outcome: str) -> None:
    """Count one replay by ops and the status the event ended in."""
    EVENTS_REPLAYED.labels(outcome=outcome).inc()


class BacklogCollector(Collector):
    """Backlog gauges read from PostgreSQL at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        count = GaugeMetricFamily(
            "stripe_events_backlog",
            "Stored events not yet settled, by status (received, pending, failed)",
            labels=["status"],
        )
        oldest = GaugeMetricFamily(
            "stripe_events_backlog_oldest_seconds",
            "Age of the oldest unsettled event, by status (0 when there is none)",
            labels=["status"],
        )
        up = GaugeMetricFamily(
            "stripe_events_backlog_scrape_ok",
            "1 when the backlog could be read from the database during this scrape",
        )
        started = time.perf_counter()
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    text(f"SET LOCAL statement_timeout = {BACKLOG_QUERY_TIMEOUT_MS}")
                )
                rows = {row.status: row for row in connection.execute(_BACKLOG_QUERY)}
        except SQLAlchemyError as exc:
            log.warning("metrics.backlog.failed", extra={"error": type(exc).__name__})
            up.add_metric([], 0)
            yield up
            return
        for status in BACKLOG_STATUSES:
            row = rows.get(status)
            count.add_metric([status], row.n if row else 0)
            oldest.add_metric([status], float(row.oldest) if row else 0.0)
        up.add_metric([], 1)
        yield count
        yield oldest
        yield up
        log.debug("metrics.backlog.read", extra={"seconds": time.perf_counter() - started})


def scrape(engine: Engine) -> bytes:
    """The Prometheus text exposition of every process's metrics plus the backlog."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(BacklogCollector(engine))
    return generate_latest(registry)


class _Forward(Collector):
    """The process's default registry, when not running under several processes."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield from self.source.collect()


bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus scrape endpoint."""
    body = scrape(current_app.extensions["engine"])
    return Response(body, status=200, content_type=CONTENT_TYPE_LATEST)

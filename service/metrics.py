"""Prometheus metrics the service records: webhook outcomes, signature failures, latency."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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


def observe_webhook(event_type: str, outcome: str, seconds: float) -> None:
    """Count one answered delivery and how long storing and applying it took."""
    EVENTS_RECEIVED.labels(type=event_type, outcome=outcome).inc()
    PROCESSING_SECONDS.observe(seconds)

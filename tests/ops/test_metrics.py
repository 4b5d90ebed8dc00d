"""`GET /metrics`: counts after deliveries, the backlog read from PostgreSQL, and whole
figures across several gunicorn workers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.cli import gunicorn_argv

from ..helpers import TEST_SECRET, make_event, post_event, signed_headers, store_event

ROOT = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return samples(response.get_data(as_text=True))


def received(metrics, event_type: str, outcome: str) -> float:
    key = ("stripe_events_received_total", (("outcome", outcome), ("type", event_type)))
    return metrics.get(key, 0.0)


def test_metrics_count_deliveries_by_type_and_outcome(client):
    before = scrape(client)
    unknown = make_event("product.created", {"object": "product", "id": "prod_1"})
    post_event(client, unknown)
    post_event(client, unknown)
    customer = make_event("customer.updated", {"object": "customer", "id": "cus_m"})
    post_event(client, customer)
    body = json.dumps(unknown).encode()
    client.post("/webhooks/stripe", data=body, headers=signed_headers(body, "whsec_wrong"))
    after = scrape(client)

    assert (
        received(after, "product.created", "ignored")
        - received(before, "product.created", "ignored")
        == 1
    )
    assert (
        received(after, "product.created", "duplicate")
        - received(before, "product.created", "duplicate")
        == 1
    )
    assert (
        received(after, "customer.updated", "pending")
        - received(before, "customer.updated", "pending")
        == 1
    )
    failures = ("stripe_signature_failures_total", ())
    assert after[failures] - before.get(failures, 0) == 1
    latency = ("stripe_event_processing_seconds_count", ())
    assert after[latency] - before.get(latency, 0) == 3


def test_backlog_gauges_are_read_from_the_database(client, engine):
    store_event(
        engine,
        make_event("invoice.paid", {"object": "invoice", "id": "in_1", "customer": "cus_1"}),
        status="failed",
        received_at="2020-01-01T00:00:00Z",
    )
    for n in range(2):
        store_event(
            engine,
            make_event("customer.updated", {"object": "customer", "id": f"cus_{n}"}),
            status="pending",
        )
    metrics = scrape(client)
    assert metrics[("stripe_events_backlog", (("status", "failed"),))] == 1
    assert metrics[("stripe_events_backlog", (("status", "pending"),))] == 2
    assert metrics[("stripe_events_backlog", (("status", "received"),))] == 0
    assert (
        metrics[("stripe_events_backlog_oldest_seconds", (("status", "failed"),))] > 3 * 365 * 86400
    )
    assert metrics[("stripe_events_backlog_scrape_ok", ())] == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_metrics_are_whole_across_gunicorn_workers(database_url, tmp_path):
    """Four workers share the deliveries; every scrape reports all of them."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": TEST_SECRET,
        "LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
    }
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "prometheus" / "counter_stale.db").write_bytes(b"left over from a crash")
    server = subprocess.Popen(
        gunicorn_argv(f"127.0.0.1:{port}", 4),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/health/live", timeout=1).close()  # noqa: S310
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    output = server.stderr.read().decode() if server.stderr else ""
                    raise AssertionError(f"gunicorn did not start: {output}") from None
                time.sleep(0.2)
        deliveries = 24
        for n in range(deliveries):
            event = make_event("product.created", {"object": "product", "id": f"prod_{n}"})
            body = json.dumps(event).encode()
            request = urllib.request.Request(  # noqa: S310
                f"{base}/webhooks/stripe", data=body, headers=signed_headers(body), method="POST"
            )
            # A fresh connection each time, so the deliveries spread over the workers.
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                assert response.status == 200
        for _ in range(6):
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:  # noqa: S310
                metrics = samples(response.read().decode())
            assert received(metrics, "product.created", "ignored") == deliveries
            assert metrics[("stripe_event_processing_seconds_count", ())] == deliveries
        files = {p.name for p in (tmp_path / "prometheus").iterdir()}
        assert "counter_stale.db" not in files, "gunicorn_conf cleans the directory at start"
        assert any(name.startswith("counter_") for name in files)
    finally:
        server.terminate()
        server.wait(timeout=30)

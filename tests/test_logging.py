"""Logs are JSON lines with stable keys and the event id; payloads and secrets stay out."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from service import create_app
from service.logging_setup import JsonFormatter
from service.stripe_webhooks import handlers
from service.stripe_webhooks.handlers import Outcome

from .helpers import TEST_SECRET, make_event, post_event, signed_headers

# Distinctive strings that appear only in the payloads sent below.
PAYLOAD_MARKER = "payload-marker-never-logged"
EMAIL = "jane.customer@example.com"


def test_a_record_is_one_json_object_with_stable_keys_and_its_fields():
    record = logging.LogRecord(
        "service.x", logging.INFO, __file__, 1, "stripe.event.processed", None, None
    )
    record.event_id = "evt_1"
    record.account_id = None  # unset fields are left out, not written as null
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert list(entry)[:4] == ["ts", "level", "logger", "msg"]
    assert entry["level"] == "info"
    assert entry["logger"] == "service.x"
    assert entry["msg"] == "stripe.event.processed"
    assert entry["event_id"] == "evt_1"
    assert "account_id" not in entry
    assert entry["ts"].endswith("+00:00")


def test_an_exception_is_kept_inside_the_json_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "service.x", logging.ERROR, __file__, 1, "x.failed", None, sys.exc_info()
        )
    entry = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in entry["exc_info"]


@pytest.fixture
def log_lines(settings):
    """Every line the service logs at INFO while the test runs, parsed."""
    app = create_app(settings.replace(log_level="INFO"))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("service")
    logger.addHandler(handler)
    yield app, stream
    logger.removeHandler(handler)
    logger.setLevel(settings.log_level)
    app.extensions["engine"].dispose()


def _read(stream: io.StringIO) -> list[dict]:
    text = stream.getvalue()
    return [json.loads(line) for line in text.splitlines() if line]


def test_endpoint_logs_name_the_event_and_never_carry_payload_or_secret(log_lines, monkeypatch):
    app, stream = log_lines
    client = app.test_client()

    def broken(session, event, context):
        raise RuntimeError("handler failed")

    monkeypatch.setitem(handlers.HANDLERS, "test.logging.broken", broken)
    monkeypatch.setitem(handlers.HANDLERS, "test.logging.ok", lambda s, e, c: Outcome("processed"))
    customer = {"object": "customer", "id": "cus_log", "email": EMAIL, "note": PAYLOAD_MARKER}
    ok = make_event("test.logging.ok", customer)
    ignored = make_event("test.logging.unknown", customer)
    failed = make_event("test.logging.broken", customer)
    for event in (ok, ignored, failed):
        assert post_event(client, event).status_code == 200
    assert post_event(client, ok).get_json()["status"] == "duplicate"
    # A bad signature, a bad payload, and JSON PostgreSQL refuses (its error quotes the JSON).
    body = json.dumps(ok).encode()
    client.post("/webhooks/stripe", data=body, headers={"Stripe-Signature": "t=1,v1=00"})
    junk = f'{{"note": "{PAYLOAD_MARKER}"}}'.encode()
    client.post("/webhooks/stripe", data=junk, headers=signed_headers(junk))
    nul = make_event("test.logging.unknown", {**customer, "bad": "\u0000"})
    assert post_event(client, nul).status_code == 400

    entries = _read(stream)
    text = stream.getvalue()
    assert PAYLOAD_MARKER not in text
    assert EMAIL not in text
    assert TEST_SECRET not in text

    by_key: dict[str, list[dict]] = {}
    for entry in entries:
        assert {"ts", "level", "logger", "msg"} <= set(entry)
        by_key.setdefault(entry["msg"], []).append(entry)
    assert {e["event_id"] for e in by_key["stripe.event.processed"]} == {ok["id"]}
    assert {e["event_id"] for e in by_key["stripe.event.ignored"]} == {ignored["id"]}
    assert {e["event_id"] for e in by_key["stripe.event.duplicate"]} == {ok["id"]}
    failed_entry = by_key["stripe.event.failed"][0]
    assert failed_entry["event_id"] == failed["id"]
    assert failed_entry["level"] == "warning"
    assert failed_entry["event_type"] == "test.logging.broken"
    assert "stripe.signature.invalid" in by_key
    reasons = {e.get("event_id") for e in by_key["stripe.payload.invalid"]}
    assert nul["id"] in reasons

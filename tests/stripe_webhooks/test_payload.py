"""Bodies that are validly signed but are not a storable Stripe snapshot event: 400, 413 or
405 with a JSON error, never a 500, and nothing stored."""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text
from werkzeug.test import EnvironBuilder, run_wsgi_app

from service.stripe_webhooks.signature import sign_header

from ..helpers import TEST_SECRET, make_event, signed_headers


def _post_signed(client, body: bytes):
    return client.post("/webhooks/stripe", data=body, headers=signed_headers(body))


def _assert_invalid_payload(response, message_part: str = "") -> None:
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error", "message"}
    assert body["error"] == "invalid_payload"
    assert message_part in body["message"]


def _stored(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM stripe_events")).scalar_one()


def _event(**changes):
    event = make_event("customer.updated", {"object": "customer", "id": "cus_payload"})
    event.update(changes)
    return event


@pytest.mark.parametrize(
    ("body", "message_part"),
    [
        (b"this is not valid JSON", "not valid UTF-8 JSON"),
        (b"", "not valid UTF-8 JSON"),
        (b'{"id": "evt_1", ', "not valid UTF-8 JSON"),
        (b"\xff\xfe{}", "not valid UTF-8 JSON"),
        (b"[1, 2, 3]", "must be a JSON object"),
        (b'"evt_1"', "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, ""),
    ],
    ids=["text", "empty", "truncated", "not-utf8", "array", "string", "null", "deep"],
)
def test_a_body_that_is_not_a_json_object_is_rejected(client, engine, body, message_part):
    _assert_invalid_payload(_post_signed(client, body), message_part)
    assert _stored(engine) == 0


@pytest.mark.parametrize(
    ("field", "message_part"),
    [
        ("id", '"id"'),
        ("type", '"type"'),
        ("created", '"created"'),
        ("livemode", '"livemode"'),
        ("data", '"data.object"'),
        ("object", '"object" must be "event"'),
    ],
)
def test_an_event_missing_a_field_is_rejected(client, engine, field, message_part):
    event = _event()
    del event[field]
    _assert_invalid_payload(_post_signed(client, json.dumps(event).encode()), message_part)
    assert _stored(engine) == 0


@pytest.mark.parametrize(
    "changes",
    [
        {"id": ""},
        {"id": 42},
        {"type": None},
        {"created": "2026-12-04T00:00:00Z"},
        {"created": True},
        {"created": -1},
        {"created": 1.5},
        {"livemode": "false"},
        {"api_version": 2025},
        {"data": {"object": "cus_1"}},
    ],
)
def test_an_event_with_a_wrong_field_type_is_rejected(client, engine, changes):
    _assert_invalid_payload(_post_signed(client, json.dumps(_event(**changes)).encode()))
    assert _stored(engine) == 0


def test_a_thin_event_is_rejected_with_a_message_about_snapshot_events(client, engine):
    thin = {
        "id": "evt_thin",
        "object": "v2.core.event",
        "type": "v1.billing.meter.error_report_triggered",
        "livemode": True,
        "created": "2022-02-15T00:27:45.330Z",
    }
    response = _post_signed(client, json.dumps(thin).encode())
    _assert_invalid_payload(response, "snapshot events")
    assert "thin event" in response.get_json()["message"]
    assert _stored(engine) == 0


@pytest.mark.parametrize(
    "raw_json",
    [
        # PostgreSQL's jsonb refuses the null character and lone surrogates that JSON allows.
        '"name": "nul\\u0000here"',
        '"nul\\u0000key": 1',
        '"name": "lone \\ud800 surrogate"',
        '"amount": NaN',
        '"amount": Infinity',
        '"amount": 1e1000000',
    ],
    ids=["nul-value", "nul-key", "surrogate", "nan", "infinity", "huge-number"],
)
def test_json_that_postgresql_cannot_store_is_a_400_not_a_500(client, engine, raw_json):
    event = _event()
    event["data"]["object"]["extra"] = "PLACEHOLDER"
    body = json.dumps(event).replace('"extra": "PLACEHOLDER"', raw_json).encode()
    _assert_invalid_payload(_post_signed(client, body))
    assert _stored(engine) == 0


def test_a_nul_in_the_event_id_is_a_400_not_a_500(client, engine):
    _assert_invalid_payload(_post_signed(client, json.dumps(_event(id="evt_\u0000")).encode()))
    assert _stored(engine) == 0


@pytest.mark.parametrize("field", ["id", "type", "api_version"])
def test_a_lone_surrogate_in_a_stored_field_is_a_400_not_a_500(client, engine, field):
    body = json.dumps(_event(**{field: "x_\ud800"})).encode()
    assert b"\\ud800" in body
    _assert_invalid_payload(_post_signed(client, body))
    assert _stored(engine) == 0


def test_a_lone_surrogate_in_the_customer_id_is_a_400_not_a_500(client, engine):
    subscription = {"object": "subscription", "id": "sub_1", "customer": "cus_\udc00"}
    event = make_event("customer.subscription.updated", subscription)
    _assert_invalid_payload(_post_signed(client, json.dumps(event).encode()), "customer id")
    assert _stored(engine) == 0


def test_a_nul_in_the_customer_id_is_a_400_not_a_500(client, engine):
    event = make_event("customer.updated", {"object": "customer", "id": "cus_\u0000"})
    _assert_invalid_payload(_post_signed(client, json.dumps(event).encode()))
    assert _stored(engine) == 0


# --- 413: too large, refused before the body is read ------------------------------------


@pytest.fixture
def small_limit_client(settings):
    from service import create_app

    app = create_app(settings.replace(max_webhook_bytes=2_000))
    yield app.test_client()
    app.extensions["engine"].dispose()


def _padded_event(size: int) -> bytes:
    event = _event()
    event["data"]["object"]["padding"] = ""
    filler = size - len(json.dumps(event).encode())
    event["data"]["object"]["padding"] = "x" * filler
    body = json.dumps(event).encode()
    assert len(body) == size
    return body


def _assert_too_large(response) -> None:
    assert response.status_code == 413
    body = response.get_json()
    assert body["error"] == "payload_too_large"
    assert "2000 bytes" in body["message"]


def test_a_body_at_the_limit_is_accepted(small_limit_client):
    response = _post_signed(small_limit_client, _padded_event(2_000))
    assert response.status_code == 200, response.get_json()


def test_a_body_over_the_limit_is_refused_with_413(small_limit_client, engine):
    _assert_too_large(_post_signed(small_limit_client, _padded_event(2_001)))
    assert _stored(engine) == 0


class _UnreadableStream:
    """A request body that records every read: the view must not read a refused body."""

    def __init__(self) -> None:
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        chunk = b"x" * (65_536 if size is None or size < 0 else min(size, 65_536))
        self.bytes_read += len(chunk)
        return chunk

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)


def test_a_declared_content_length_over_the_limit_is_refused_without_reading(
    small_limit_client,
):
    stream = _UnreadableStream()
    environ = EnvironBuilder(
        path="/webhooks/stripe",
        method="POST",
        headers={"Stripe-Signature": "t=1,v1=00", "Content-Type": "application/json"},
    ).get_environ()
    # 5 GiB announced; the stream would hand out bytes for as long as it is asked.
    environ["wsgi.input"] = stream
    environ["CONTENT_LENGTH"] = str(5 * 1024**3)
    app_iter, status, _ = run_wsgi_app(small_limit_client.application, environ)
    document = json.loads(b"".join(app_iter))
    assert status.startswith("413")
    assert document["error"] == "payload_too_large"
    assert stream.bytes_read == 0


def _chunked_post(base_url: str, chunks: list[bytes], header: str) -> tuple[int, dict]:
    url = urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request(
            "POST",
            "/webhooks/stripe",
            body=iter(chunks),
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture
def small_limit_server(settings):
    from service import create_app

    from .conftest import serve_in_thread

    app = create_app(settings.replace(max_webhook_bytes=2_000))
    yield from serve_in_thread(app)
    app.extensions["engine"].dispose()


def test_a_chunked_body_over_the_limit_is_refused_with_413(small_limit_server, engine):
    body = _padded_event(2_001)
    header = sign_header(body, TEST_SECRET, int(time.time()))
    chunks = [body[i : i + 500] for i in range(0, len(body), 500)]
    status, document = _chunked_post(small_limit_server, chunks, header)
    assert status == 413
    assert document["error"] == "payload_too_large"
    assert _stored(engine) == 0


def test_a_chunked_body_within_the_limit_is_accepted(small_limit_server, engine):
    body = _padded_event(1_999)
    header = sign_header(body, TEST_SECRET, int(time.time()))
    chunks = [body[i : i + 500] for i in range(0, len(body), 500)]
    status, document = _chunked_post(small_limit_server, chunks, header)
    assert status == 200, document
    assert _stored(engine) == 1


# --- 405 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_with_a_json_error(client, method):
    response = client.open("/webhooks/stripe", method=method)
    assert response.status_code == 405
    assert response.is_json
    assert response.get_json()["error"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]

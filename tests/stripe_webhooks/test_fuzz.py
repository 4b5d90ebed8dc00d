"""Random headers and bodies thrown at the endpoint: whatever arrives, never a 500.

Bad input gets a JSON 400/413; a validly signed event, however odd its contents, is
stored and answered 200 (a handler that chokes on it marks it `failed`). A 503 would mean
the database refused something the endpoint should have caught, so it counts as a bug too.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from service.stripe_webhooks.handlers import HANDLERS
from service.stripe_webhooks.signature import sign_header

from ..helpers import TEST_SECRET

pytestmark = pytest.mark.slow

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=15,
)

# Any code point, lone surrogates included: JSON can carry them (`"\\ud800"`), PostgreSQL cannot.
# (A list joined, because st.text() drops surrogates from any alphabet it is given.)
any_text = st.lists(
    st.characters() | st.sampled_from(["\ud800", "\udfff", "\x00", "\u00e9"]), max_size=12
).map("".join)

maybe_ids = st.one_of(
    any_text,
    st.none(),
    st.text(max_size=12),
    st.from_regex(r"\A(cus|sub|in|cs|price)_[a-z0-9]{1,8}\Z"),
    json_values,
)


@st.composite
def data_objects(draw: st.DrawFn) -> dict:
    """Something shaped like a Stripe object, with anything in its fields."""
    obj = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    obj["object"] = draw(
        st.sampled_from(["subscription", "invoice", "checkout.session", "customer", "price"])
        | json_values
    )
    for key in ("id", "customer", "status", "subscription", "client_reference_id"):
        if draw(st.booleans()):
            obj[key] = draw(maybe_ids)
    if draw(st.booleans()):
        obj["items"] = {"data": draw(st.lists(json_values, max_size=2))}
    if draw(st.booleans()):
        obj["metadata"] = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2))
    return obj


@st.composite
def events(draw: st.DrawFn) -> dict:
    """A Stripe event of a handled or random type; sometimes a field is wrong or missing."""
    event = {
        "id": draw(st.from_regex(r"\Aevt_[A-Za-z0-9]{1,24}\Z") | any_text),
        "object": "event",
        "type": draw(st.sampled_from(sorted(HANDLERS)) | any_text),
        "created": draw(st.integers(min_value=-10, max_value=2**42)),
        "livemode": draw(st.booleans()),
        "api_version": draw(st.none() | any_text),
        "data": {"object": draw(data_objects())},
    }
    if draw(st.booleans()):
        key = draw(st.sampled_from(sorted(event)))
        event[key] = draw(json_values)
    return event


def bodies() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda value: json.dumps(value).encode()),
        events().map(lambda event: json.dumps(event).encode()),
    )


header_values = st.one_of(
    st.none(),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80),
    st.builds(
        lambda ts, sig: f"t={ts},v1={sig}",
        st.integers(-(2**40), 2**40),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=70),
    ),
)


def _assert_answer(response) -> None:
    assert response.status_code in {200, 400, 413}, response.get_data(as_text=True)
    document = response.get_json()
    event(f"{response.status_code} {document.get('status') or document.get('error')}")
    assert isinstance(document, dict)
    if response.status_code == 200:
        assert document["received"] is True
        assert document["status"] in {"processed", "duplicate", "ignored", "pending", "failed"}
    else:
        assert set(document) == {"error", "message"}


@FUZZ
@given(body=bodies(), header=header_values)
def test_random_headers_and_bodies_never_yield_a_500(client, body, header):
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    response = client.post("/webhooks/stripe", data=body, headers=headers)
    _assert_answer(response)
    assert response.status_code == 400  # nothing unsigned gets through


@FUZZ
@given(body=bodies(), offset=st.integers(-600, 600) | st.integers(-(10**400), 10**400))
def test_validly_signed_random_bodies_never_yield_a_500(client, body, offset):
    header = sign_header(body, TEST_SECRET, int(time.time()) + offset)
    response = client.post(
        "/webhooks/stripe",
        data=body,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )
    _assert_answer(response)
    if abs(offset) > 310:
        assert response.get_json()["error"] == "invalid_signature"


@FUZZ
@given(stripe_event=events())
def test_validly_signed_random_events_never_yield_a_500(client, stripe_event):
    body = json.dumps(stripe_event).encode()
    response = client.post(
        "/webhooks/stripe",
        data=body,
        headers={"Stripe-Signature": sign_header(body, TEST_SECRET, int(time.time()))},
    )
    _assert_answer(response)

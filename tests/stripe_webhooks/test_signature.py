"""The `Stripe-Signature` check: every case of the stripe library's own webhook tests,
replayed through our HTTP endpoint, plus the additions (future timestamps, rotation).

Each HTTP case asserts the status code and the whole error body. A final property test
checks that `verify()` accepts exactly the headers `stripe.WebhookSignature.verify_header`
accepts, wherever the two are meant to agree.
"""

from __future__ import annotations

import json
import time

import pytest
import stripe
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from service.stripe_webhooks.signature import (
    SignatureError,
    compute_signature,
    sign_header,
    verify,
)

from ..helpers import TEST_SECRET, make_event

OTHER_SECRET = "whsec_some_other_endpoint"
TOLERANCE = 300


def _body() -> bytes:
    event = make_event("customer.created", {"object": "customer", "id": "cus_sig"})
    return json.dumps(event, indent=2).encode()


def _post(client, body: bytes, header: str | None):
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    return client.post("/webhooks/stripe", data=body, headers=headers)


def _assert_invalid_signature(response, message_part: str) -> None:
    assert response.status_code == 400
    body = response.get_json()
    assert set(body) == {"error", "message"}
    assert body["error"] == "invalid_signature"
    assert message_part in body["message"]


def _sig(body: bytes, ts: int, secret: str = TEST_SECRET) -> str:
    return compute_signature(ts, body, secret)


# --- The stripe library's tests, through the endpoint -----------------------------------


def test_a_valid_header_is_accepted(client):
    body = _body()
    response = _post(client, body, sign_header(body, TEST_SECRET, int(time.time())))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["received"] is True


def test_a_missing_header_is_rejected(client):
    _assert_invalid_signature(_post(client, _body(), None), "No Stripe-Signature header")


def test_an_empty_header_is_rejected(client):
    _assert_invalid_signature(_post(client, _body(), ""), "No Stripe-Signature header")


@pytest.mark.parametrize(
    "header",
    [
        "i'm not even a real signature header",
        "bad_header",
        "t=,v1=abc",
        "t=notanumber,v1=abc",
        "v1=abc",
        "t",
    ],
)
def test_a_malformed_header_is_rejected(client, header):
    _assert_invalid_signature(
        _post(client, _body(), header), "Unable to extract timestamp and signatures"
    )


def test_a_header_without_a_v1_signature_is_rejected(client):
    body = _body()
    ts = int(time.time())
    # v0 only, even correctly computed: the library accepts nothing but v1.
    header = f"t={ts},v0={_sig(body, ts)}"
    _assert_invalid_signature(
        _post(client, body, header), "No signatures found with expected scheme v1"
    )


def test_a_bad_signature_is_rejected(client):
    header = f"t={int(time.time())},v1=bad_signature"
    _assert_invalid_signature(
        _post(client, _body(), header), "No signatures found matching the expected signature"
    )


def test_a_signature_made_with_another_secret_is_rejected(client):
    body = _body()
    header = sign_header(body, OTHER_SECRET, int(time.time()))
    _assert_invalid_signature(
        _post(client, body, header), "No signatures found matching the expected signature"
    )


def test_a_tampered_body_is_rejected(client):
    body = _body()
    header = sign_header(body, TEST_SECRET, int(time.time()))
    tampered = body.replace(b'"livemode": false', b'"livemode": true')
    assert tampered != body
    _assert_invalid_signature(
        _post(client, tampered, header), "No signatures found matching the expected signature"
    )


def test_an_expired_timestamp_is_rejected(client):
    body = _body()
    header = sign_header(body, TEST_SECRET, int(time.time()) - TOLERANCE - 15)
    _assert_invalid_signature(_post(client, body, header), "Timestamp outside the tolerance zone")


def test_a_header_with_several_v1_of_which_one_matches_is_accepted(client):
    body = _body()
    ts = int(time.time())
    header = f"t={ts},v1=bad_signature,v1={_sig(body, ts)},v1={_sig(body, ts, OTHER_SECRET)}"
    response = _post(client, body, header)
    assert response.status_code == 200, response.get_json()


def test_a_v0_signature_beside_a_valid_v1_does_not_matter(client):
    body = _body()
    ts = int(time.time())
    v0 = "6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
    header = f"t={ts},v1={_sig(body, ts)},v0={v0}"
    assert _post(client, body, header).status_code == 200


def test_an_uppercase_hex_signature_is_rejected(client):
    body = _body()
    ts = int(time.time())
    header = f"t={ts},v1={_sig(body, ts).upper()}"
    _assert_invalid_signature(
        _post(client, body, header), "No signatures found matching the expected signature"
    )


def test_spaces_after_the_commas_are_rejected(client):
    body = _body()
    ts = int(time.time())
    # " v1" is not the key "v1", so no signature has the expected scheme.
    header = f"t={ts}, v1={_sig(body, ts)}"
    _assert_invalid_signature(
        _post(client, body, header), "No signatures found with expected scheme v1"
    )


def test_a_space_before_the_timestamp_is_rejected(client):
    body = _body()
    ts = int(time.time())
    header = f" t={ts},v1={_sig(body, ts)}"
    _assert_invalid_signature(_post(client, body, header), "Unable to extract timestamp")


def test_a_trailing_space_in_the_signature_is_rejected(client):
    body = _body()
    ts = int(time.time())
    header = f"t={ts},v1={_sig(body, ts)} "
    _assert_invalid_signature(
        _post(client, body, header), "No signatures found matching the expected signature"
    )


def test_a_bare_v1_item_rejects_the_header_as_the_library_does(client):
    body = _body()
    ts = int(time.time())
    header = f"t={ts},v1,v1={_sig(body, ts)}"
    _assert_invalid_signature(_post(client, body, header), "Unable to extract timestamp")


def test_the_first_timestamp_wins(client):
    body = _body()
    ts = int(time.time())
    header = f"t={ts},t={ts - 1},v1={_sig(body, ts)}"
    assert _post(client, body, header).status_code == 200
    header = f"t={ts - 1},t={ts},v1={_sig(body, ts)}"
    _assert_invalid_signature(
        _post(client, body, header), "No signatures found matching the expected signature"
    )


# --- Ours: future timestamps, rotation, the payload's own errors ------------------------


def test_a_timestamp_too_far_in_the_future_is_rejected(client):
    body = _body()
    header = sign_header(body, TEST_SECRET, int(time.time()) + TOLERANCE + 15)
    _assert_invalid_signature(_post(client, body, header), "Timestamp outside the tolerance zone")


@pytest.mark.parametrize("offset", [-(TOLERANCE - 15), TOLERANCE - 15])
def test_a_timestamp_within_the_tolerance_either_way_is_accepted(client, offset):
    body = _body()
    header = sign_header(body, TEST_SECRET, int(time.time()) + offset)
    assert _post(client, body, header).status_code == 200


@pytest.fixture
def rotating_client(settings):
    from service import create_app

    app = create_app(settings.replace(stripe_webhook_secrets=(OTHER_SECRET, TEST_SECRET)))
    yield app.test_client()
    app.extensions["engine"].dispose()


@pytest.mark.parametrize("secret", [OTHER_SECRET, TEST_SECRET])
def test_while_rotating_either_secret_is_accepted(rotating_client, secret):
    body = _body()
    response = _post(rotating_client, body, sign_header(body, secret, int(time.time())))
    assert response.status_code == 200, response.get_json()


def test_while_rotating_a_third_secret_is_rejected(rotating_client):
    body = _body()
    header = sign_header(body, "whsec_retired_long_ago", int(time.time()))
    _assert_invalid_signature(
        _post(rotating_client, body, header), "No signatures found matching the expected signature"
    )


def test_a_validly_signed_body_that_is_not_json_is_an_invalid_payload(client):
    body = b"this is not valid JSON"
    response = _post(client, body, sign_header(body, TEST_SECRET, int(time.time())))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_payload"


def test_the_signature_is_checked_before_the_payload(client):
    response = _post(client, b"this is not valid JSON", "t=1,v1=bad")
    assert response.get_json()["error"] == "invalid_signature"


# --- verify() itself --------------------------------------------------------------------


def test_verify_returns_the_signed_timestamp():
    body = b'{"id": "evt_1"}'
    assert verify(body, sign_header(body, TEST_SECRET, 1_000), [TEST_SECRET], 300, 1_000.0) == 1_000


def test_verify_accepts_exactly_up_to_the_tolerance_on_both_sides():
    body = b"{}"
    header = sign_header(body, TEST_SECRET, 1_000)
    for now in (700.0, 1_300.0):
        assert verify(body, header, [TEST_SECRET], 300, now) == 1_000
    for now in (699.0, 1_301.0):
        with pytest.raises(SignatureError, match="tolerance zone"):
            verify(body, header, [TEST_SECRET], 300, now)


@pytest.mark.parametrize("timestamp", [10**400, -(10**400), 2**63])
def test_verify_refuses_absurd_signed_timestamps_without_crashing(timestamp):
    body = b"{}"
    with pytest.raises(SignatureError, match="tolerance zone"):
        verify(body, sign_header(body, TEST_SECRET, timestamp), [TEST_SECRET], 300, 1_000.0)


def test_verify_checks_the_signature_before_the_time():
    # A forged header learns nothing about the clock: the signature fails first.
    with pytest.raises(SignatureError, match="matching the expected signature"):
        verify(b"{}", "t=1,v1=00", [TEST_SECRET], 300, 1_000_000.0)


def test_verify_tries_every_secret():
    body = b"{}"
    header = sign_header(body, "whsec_b", 50)
    assert verify(body, header, ["whsec_a", "whsec_b", "whsec_c"], 300, 50.0) == 50
    with pytest.raises(SignatureError):
        verify(body, header, ["whsec_a", "whsec_c"], 300, 50.0)


def test_verify_survives_non_ascii_signatures():
    body = b"{}"
    header = f"t=50,v1=\u00e9\u00e9,v1={compute_signature(50, body, TEST_SECRET)}"
    assert verify(body, header, [TEST_SECRET], 300, 50.0) == 50


def test_error_messages_never_reveal_a_secret_or_the_expected_signature():
    body = b'{"id": "evt_leak"}'
    expected = compute_signature(1_000, body, TEST_SECRET)
    headers = ["", "junk", "t=1000,v0=x", "t=1000,v1=00", sign_header(body, TEST_SECRET, 1)]
    for header in headers:
        with pytest.raises(SignatureError) as caught:
            verify(body, header, [TEST_SECRET], 300, 1_000.0)
        assert TEST_SECRET not in str(caught.value)
        assert expected not in str(caught.value)


def test_our_signatures_are_the_librarys():
    body = '{"id": "evt_lib", "name": "caf\u00e9"}'
    ours = sign_header(body.encode(), TEST_SECRET, 1_234)
    assert ours == stripe.WebhookSignature.generate_signature_header(body, TEST_SECRET, 1_234)


# --- Differential: verify() against the library -----------------------------------------

# The library has no future check and one secret; timestamps here are in the past (or
# now), never within 5 s of the tolerance edge, so the two clocks cannot disagree.
# Headers are ASCII: for a non-ASCII candidate the library raises TypeError instead of
# answering (hmac.compare_digest on str), which is a crash, not a verdict to mirror.
_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


@st.composite
def _header_and_body(draw: st.DrawFn) -> tuple[str, str]:
    body = draw(st.text(max_size=60))
    now = int(time.time())
    age = draw(st.one_of(st.integers(0, TOLERANCE - 5), st.integers(TOLERANCE + 5, 10 * TOLERANCE)))
    ts = now - age
    good = compute_signature(ts, body.encode(), TEST_SECRET)
    item = st.one_of(
        st.just(f"t={ts}"),
        st.just(f"v1={good}"),
        st.just(f"v1={good.upper()}"),
        st.just(f"v0={good}"),
        st.just(f" v1={good}"),
        st.just(f"v1={good}="),
        st.just(f"v1={good}=extra"),
        st.just(f"v1={compute_signature(ts, body.encode(), OTHER_SECRET)}"),
        st.just(f"t={ts - 1}"),
        st.just(f"t=0{ts}"),
        st.just(f"t=+{ts}"),
        st.sampled_from(["v1", "t", "t=", "v1=", "", "=", "x=1"]),
        st.text(_ASCII, max_size=12),
    )
    items = draw(st.lists(item, max_size=4))
    # Most interesting headers are nearly valid: put the right parts in, somewhere.
    for part in (f"v1={good}", f"t={ts}"):
        if draw(st.booleans()):
            items.insert(draw(st.integers(0, len(items))), part)
    return ",".join(items), body


def _library_accepts(body: str, header: str) -> bool:
    try:
        return bool(stripe.WebhookSignature.verify_header(body, header, TEST_SECRET, TOLERANCE))
    except Exception:
        return False


def _we_accept(body: str, header: str) -> bool:
    try:
        verify(body.encode(), header, [TEST_SECRET], TOLERANCE, time.time())
    except SignatureError:
        return False
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_header_and_body())
def test_verify_accepts_exactly_what_the_library_accepts(header_and_body):
    header, body = header_and_body
    accepted = _library_accepts(body, header)
    event(f"library accepts: {accepted}")
    assert _we_accept(body, header) == accepted, header

"""Bad input for a bounded time: the signature parser and the endpoint never answer 500.

Hypothesis draws headers, bodies and, under valid signatures, event-shaped JSON whose
fields have the wrong types, wrong nesting and odd values, so the payload checks and the
billing handlers behind them are exercised too. The endpoint runs in this process on a
real database; each answer must be 200, 400 or 413, and the process must not crash.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from service import create_app
from service.config import Settings
from service.stripe_webhooks.handlers import HANDLERS
from service.stripe_webhooks.signature import SignatureError, sign_header, verify

from ..events import SECRET
from .common import Figures

ALLOWED = {200, 400, 413}
NOW = int(time.time())

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = [
    "id", "object", "customer", "status", "items", "data", "price", "metadata", "plan",
    "lookup_key", "client_reference_id", "subscription", "parent", "subscription_details",
    "current_period_end", "current_period_start", "cancel_at_period_end", "created",
    "lines", "email", "deleted", "account_id", "mode", "payment_status", "canceled_at",
]  # fmt: skip
objects = st.recursive(
    st.dictionaries(st.sampled_from(KEYS), scalars, max_size=6),
    lambda inner: st.dictionaries(
        st.sampled_from(KEYS), scalars | inner | st.lists(inner, max_size=2), max_size=8
    ),
    max_leaves=20,
)
events = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=30).map(lambda s: "evt_fz_" + s) | json_values,
        "object": st.sampled_from(["event", "v2.core.event", "list"]) | json_values,
        "type": st.sampled_from(sorted(HANDLERS)) | st.text(max_size=30),
        "created": st.integers(min_value=-5, max_value=2**42) | json_values,
        "livemode": st.booleans() | json_values,
        "api_version": st.sampled_from(["2025-06-30.basil", "2020-08-27"]) | json_values,
        "data": st.fixed_dictionaries({"object": objects}) | json_values,
    }
)
# A valid envelope around a wild snapshot: reaches the billing handlers.
handler_events = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=20).map(lambda s: "evt_fz_" + s),
        "object": st.just("event"),
        "type": st.sampled_from(sorted(HANDLERS)),
        "created": st.integers(min_value=0, max_value=2**40),
        "livemode": st.just(False),
        "api_version": st.sampled_from(["2025-06-30.basil", "2020-08-27"]),
        "data": st.fixed_dictionaries({"object": objects}),
    }
)
# What an HTTP header can carry (the test client refuses line breaks, as servers do).
header_text = st.text(
    alphabet=st.characters(codec="latin-1", exclude_characters="\r\n\x00"), max_size=70
)
headers = header_text | st.builds(
    lambda t, sigs: f"t={t}," + ",".join(f"v1={s}" for s in sigs),
    st.integers(min_value=-(2**40), max_value=2**40) | header_text,
    st.lists(header_text | st.text("0123456789abcdef", min_size=64, max_size=64), max_size=3),
)


def run(database_url: str, seconds: float) -> Figures:
    figures = Figures("fuzz (hypothesis)")
    app = create_app(
        Settings(
            stripe_webhook_secrets=(SECRET,),
            database_url=database_url,
            log_level="CRITICAL",
            database_timeout=5.0,
        )
    )
    client = app.test_client()
    codes: dict[int, int] = {}
    examples = {"parser": 0, "unsigned": 0, "signed": 0}
    accepted_ids: set[str] = set()

    def post(body: bytes, header: str | None) -> None:
        headers_ = {"Content-Type": "application/json"}
        if header is not None:
            headers_["Stripe-Signature"] = header
        response = client.post("/webhooks/stripe", data=body, headers=headers_)
        codes[response.status_code] = codes.get(response.status_code, 0) + 1
        assert response.status_code in ALLOWED, (response.status_code, response.get_data()[:300])
        assert response.is_json, "every answer is JSON"
        if response.status_code == 200:
            accepted_ids.add(response.get_json()["id"])

    common = settings(
        max_examples=60,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )

    @common
    @given(body=st.binary(max_size=200), header=headers | st.none())
    def parser(body: bytes, header: str | None) -> None:
        examples["parser"] += 1
        with contextlib.suppress(SignatureError):
            verify(body, header, [SECRET], 300, NOW)

    @common
    @given(body=st.binary(max_size=300), header=headers | st.none())
    def unsigned(body: bytes, header: str | None) -> None:
        examples["unsigned"] += 1
        post(body, header)

    @common
    @given(payload=handler_events | events | json_values, raw=st.booleans())
    def signed(payload: Any, raw: bool) -> None:
        examples["signed"] += 1
        body = json.dumps(payload).encode() if not raw else json.dumps(payload)[:-1].encode()
        post(body, sign_header(body, SECRET, int(time.time())))

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for test in (parser, unsigned, signed):
            try:
                test()
            except Exception as exc:  # a falsified example is a finding, reported
                figures.problems.append(f"{test.__name__}: {type(exc).__name__}: {exc}"[:600])
        if figures.problems:
            break
    # Every distinct event answered 200 must be in the database, whatever became of it.
    with app.extensions["engine"].connect() as connection:
        stored = connection.execute(
            text(
                "SELECT count(*), count(*) FILTER (WHERE status = 'processed')"
                " FROM stripe_events WHERE id = ANY(:ids)"
            ),
            {"ids": sorted(accepted_ids)},
        ).one()
    app.extensions["engine"].dispose()
    figures.sent = sum(examples.values())
    figures.codes = codes
    figures.errors_500 = sum(n for code, n in codes.items() if code >= 500)
    figures.accepted = figures.accepted_first = len(accepted_ids)
    figures.stored, figures.applied = stored[0], stored[1]
    figures.lost = figures.accepted - figures.stored
    figures.expect(figures.lost == 0, f"{figures.lost} accepted events are not stored")
    figures.notes.append(f"{seconds:.0f} s budget; examples {examples}; answers {codes}")
    return figures

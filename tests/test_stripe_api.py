"""The Stripe API client against the local double: pagination, backoff, errors."""

from __future__ import annotations

import socket
import time

import pytest

from service import create_app
from service.stripe_api import StripeApi, StripeApiError, StripeObjectNotFound

from .stripe_double import StripeDouble

API_KEY = "sk_test_double"


class RecordingSleep:
    """Stands in for time.sleep: records the delays the client asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def make_api(double: StripeDouble, sleep: RecordingSleep | None = None, **kwargs) -> StripeApi:
    return StripeApi(API_KEY, api_base=double.url, sleep=sleep or RecordingSleep(), **kwargs)


def customer(n: int, created: int = 1_700_000_000) -> dict:
    return {
        "object": "customer",
        "id": f"cus_{n:03d}",
        "email": f"c{n}@example.com",
        "created": created,
    }


def list_requests(double: StripeDouble, path: str) -> list:
    return [r for r in double.requests if r.path == path]


def test_retrieve_returns_the_object_as_stripe_sent_it(stripe_double):
    subscription = stripe_double.put(
        {
            "object": "subscription",
            "id": "sub_1",
            "customer": "cus_1",
            "status": "active",
            "items": {
                "object": "list",
                "data": [
                    {"id": "si_1", "price": {"id": "price_pro", "unit_amount_decimal": "1500"}}
                ],
                "has_more": False,
            },
            "metadata": {"account_id": "acct_42"},
        }
    )
    api = make_api(stripe_double)
    assert api.retrieve_subscription("sub_1") == subscription
    assert type(api.retrieve_subscription("sub_1")) is dict
    price = stripe_double.put({"object": "price", "id": "price_pro", "lookup_key": "pro_monthly"})
    assert api.retrieve_price("price_pro") == price
    cus = stripe_double.put(customer(1))
    assert api.retrieve_customer("cus_001") == cus
    assert stripe_double.requests[0].path == "/v1/subscriptions/sub_1"


def test_a_list_spanning_pages_yields_every_object_once_newest_first(stripe_double):
    # Five customers, the last three in the same second: insertion order breaks the tie.
    for n, created in enumerate([100, 200, 300, 300, 300]):
        stripe_double.put(customer(n, created))
    api = make_api(stripe_double, page_size=2)

    ids = [c["id"] for c in api.list_customers()]

    assert ids == ["cus_004", "cus_003", "cus_002", "cus_001", "cus_000"]
    pages = list_requests(stripe_double, "/v1/customers")
    assert [p.args.get("starting_after") for p in pages] == [None, "cus_003", "cus_001"]
    assert all(p.args["limit"] == "2" for p in pages)


def test_a_list_that_fills_its_last_page_exactly_stops_without_an_extra_request(stripe_double):
    for n in range(4):
        stripe_double.put(customer(n, 1000 + n))
    api = make_api(stripe_double, page_size=2)

    assert len(list(api.list_customers())) == 4
    # has_more is false on the second page: no third, empty request.
    assert len(list_requests(stripe_double, "/v1/customers")) == 2


def test_an_empty_list_yields_nothing_after_one_request(stripe_double):
    assert list(make_api(stripe_double).list_customers()) == []
    assert len(list_requests(stripe_double, "/v1/customers")) == 1


def test_lists_are_lazy(stripe_double):
    for n in range(3):
        stripe_double.put(customer(n, 1000 + n))
    iterator = make_api(stripe_double, page_size=1).list_customers()
    assert stripe_double.requests == []
    next(iterator)
    assert len(stripe_double.requests) == 1


def test_list_subscriptions_asks_for_every_status_by_default(stripe_double):
    stripe_double.put({"object": "subscription", "id": "sub_live", "status": "active"})
    stripe_double.put({"object": "subscription", "id": "sub_gone", "status": "canceled"})
    api = make_api(stripe_double)

    assert {s["id"] for s in api.list_subscriptions()} == {"sub_live", "sub_gone"}
    assert [s["id"] for s in api.list_subscriptions(status="canceled")] == ["sub_gone"]
    assert list_requests(stripe_double, "/v1/subscriptions")[0].args["status"] == "all"


def test_list_events_filters_by_creation_and_type(stripe_double):
    now = int(time.time())
    for n, (event_type, created) in enumerate(
        [
            ("invoice.paid", now - 300),
            ("customer.subscription.updated", now - 200),
            ("invoice.paid", now - 100),
            ("charge.succeeded", now - 50),
        ]
    ):
        stripe_double.put(
            {"object": "event", "id": f"evt_{n}", "type": event_type, "created": created}
        )
    api = make_api(stripe_double)

    events = list(
        api.list_events(
            created_gt=now - 250, types=["invoice.paid", "customer.subscription.updated"]
        )
    )

    assert [e["id"] for e in events] == ["evt_2", "evt_1"]
    request = list_requests(stripe_double, "/v1/events")[0]
    assert request.args["created"] == {"gt": str(now - 250)}
    assert request.args["types"] == ["invoice.paid", "customer.subscription.updated"]


def test_list_events_never_asks_beyond_stripes_thirty_day_window(stripe_double):
    list(make_api(stripe_double).list_events(created_gt=0))
    asked = int(list_requests(stripe_double, "/v1/events")[0].args["created"]["gt"])
    assert abs(asked - (time.time() - 30 * 24 * 3600)) < 60


def test_more_than_twenty_event_types_is_refused_before_calling_stripe(stripe_double):
    with pytest.raises(ValueError, match="20"):
        make_api(stripe_double).list_events(types=[f"t.{n}" for n in range(21)])
    assert stripe_double.requests == []


def test_rate_limited_requests_back_off_then_succeed(stripe_double):
    stripe_double.put(customer(1))
    stripe_double.fail_next(3, 429)
    sleep = RecordingSleep()
    api = make_api(stripe_double, sleep, initial_delay=0.5, max_delay=30)

    assert api.retrieve_customer("cus_001")["id"] == "cus_001"

    assert [r.status for r in stripe_double.requests] == [429, 429, 429, 200]
    # Exponential with jitter in [base/2, base]: 0.5, 1, 2 seconds.
    assert len(sleep.delays) == 3
    for delay, base in zip(sleep.delays, [0.5, 1.0, 2.0], strict=True):
        assert base / 2 <= delay <= base


def test_retry_after_is_honoured(stripe_double):
    stripe_double.put(customer(1))
    stripe_double.fail_next(1, 429, retry_after=7)
    sleep = RecordingSleep()

    make_api(stripe_double, sleep, initial_delay=0.5).retrieve_customer("cus_001")

    assert sleep.delays == [7.0]


def test_a_429_in_the_middle_of_a_list_retries_that_page_only(stripe_double):
    for n in range(5):
        stripe_double.put(customer(n, 1000 + n))
    api = make_api(stripe_double, page_size=2)
    iterator = api.list_customers()
    first_page = [next(iterator)["id"], next(iterator)["id"]]

    stripe_double.fail_next(2, 429)
    rest = [c["id"] for c in iterator]

    assert first_page + rest == ["cus_004", "cus_003", "cus_002", "cus_001", "cus_000"]
    pages = list_requests(stripe_double, "/v1/customers")
    assert [(p.status, p.args.get("starting_after")) for p in pages] == [
        (200, None),
        (429, "cus_003"),
        (429, "cus_003"),
        (200, "cus_003"),
        (200, "cus_001"),
    ]


def test_rate_limited_beyond_the_retry_budget_raises_a_clear_error(stripe_double):
    stripe_double.fail_next(10, 429)
    sleep = RecordingSleep()
    api = make_api(stripe_double, sleep, max_retries=2)

    with pytest.raises(StripeApiError, match=r"rate limited by Stripe \(429\)") as caught:
        api.retrieve_customer("cus_001")

    assert caught.value.http_status == 429
    assert len(stripe_double.requests) == 3
    assert len(sleep.delays) == 2


def test_server_errors_are_retried_unless_stripe_says_not_to(stripe_double):
    stripe_double.put(customer(1))
    stripe_double.fail_next(1, 500)
    assert make_api(stripe_double).retrieve_customer("cus_001")["id"] == "cus_001"

    stripe_double.requests.clear()
    stripe_double.fail_next(1, 500, should_retry=False)
    with pytest.raises(StripeApiError, match="Stripe answered 500"):
        make_api(stripe_double).retrieve_customer("cus_001")
    assert len(stripe_double.requests) == 1


def test_a_missing_object_raises_not_found_naming_it_without_retrying(stripe_double):
    sleep = RecordingSleep()
    with pytest.raises(StripeObjectNotFound) as caught:
        make_api(stripe_double, sleep).retrieve_subscription("sub_missing")

    assert "subscription sub_missing" in str(caught.value)
    assert "404 resource_missing" in str(caught.value)
    assert caught.value.http_status == 404
    assert caught.value.code == "resource_missing"
    assert isinstance(caught.value, StripeApiError)
    assert sleep.delays == []
    assert len(stripe_double.requests) == 1


def test_an_unreachable_api_is_retried_then_reported():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on `port` now: every connection is refused.
    sleep = RecordingSleep()
    api = StripeApi(API_KEY, api_base=f"http://127.0.0.1:{port}", sleep=sleep, max_retries=2)

    with pytest.raises(StripeApiError, match="could not reach the Stripe API"):
        api.retrieve_customer("cus_001")
    assert len(sleep.delays) == 2


def test_the_app_talks_to_stripe_only_when_an_api_key_is_set(settings, stripe_double):
    without_key = create_app(settings)
    assert without_key.extensions["processing_context"].stripe_api is None
    without_key.extensions["engine"].dispose()

    with_key = create_app(
        settings.replace(stripe_api_key=API_KEY, stripe_api_base=stripe_double.url)
    )
    api = with_key.extensions["processing_context"].stripe_api
    with_key.extensions["engine"].dispose()
    stripe_double.put(customer(7))
    assert isinstance(api, StripeApi)
    assert api.retrieve_customer("cus_007")["email"] == "c7@example.com"

    # Inside a webhook it gives up after two retries: the worker retries the event later.
    stripe_double.requests.clear()
    stripe_double.fail_next(10, 429)
    with pytest.raises(StripeApiError, match="429"):
        api.retrieve_customer("cus_007")
    assert len(stripe_double.requests) == 3

"""The Stripe API double answers like Stripe where the service and its tests rely on it."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from .stripe_double import StripeDouble


def get(double: StripeDouble, path: str, *, key: str | None = "sk_test_x") -> tuple[int, Any]:
    port = int(double.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    return response.status, body


@pytest.fixture
def prices(stripe_double: StripeDouble) -> StripeDouble:
    for n in range(5):
        stripe_double.put({"object": "price", "id": f"price_{n}", "created": 1000 + n})
    return stripe_double


def test_without_an_api_key_the_answer_is_401(prices):
    status, body = get(prices, "/v1/prices", key=None)
    assert status == 401
    assert body["error"]["type"] == "invalid_request_error"


def test_lists_page_forwards_and_backwards(prices):
    status, first = get(prices, "/v1/prices?limit=2")
    assert status == 200
    assert (first["object"], first["url"], first["has_more"]) == ("list", "/v1/prices", True)
    assert [p["id"] for p in first["data"]] == ["price_4", "price_3"]
    _, last = get(prices, "/v1/prices?limit=2&starting_after=price_1")
    assert ([p["id"] for p in last["data"]], last["has_more"]) == (["price_0"], False)
    _, back = get(prices, "/v1/prices?limit=2&ending_before=price_1")
    assert ([p["id"] for p in back["data"]], back["has_more"]) == (["price_3", "price_2"], True)


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=ten"])
def test_a_limit_out_of_range_is_a_400_naming_the_parameter(prices, query):
    status, body = get(prices, f"/v1/prices?{query}")
    assert status == 400
    assert body["error"]["param"] == "limit"


def test_an_unknown_cursor_is_a_400(prices):
    status, body = get(prices, "/v1/prices?starting_after=price_nope")
    assert status == 400
    assert (body["error"]["code"], body["error"]["param"]) == ("resource_missing", "starting_after")


def test_an_unknown_id_is_a_404_in_stripes_error_shape(prices):
    status, body = get(prices, "/v1/prices/price_nope")
    assert status == 404
    assert body["error"] == {
        "type": "invalid_request_error",
        "message": "No such price: 'price_nope'",
        "code": "resource_missing",
        "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
        "param": "id",
    }


def test_injected_failures_answer_the_next_requests_then_stop(prices):
    prices.fail_next(2, 429, retry_after=3)
    answers = [get(prices, "/v1/prices/price_0")[0] for _ in range(3)]
    assert answers == [429, 429, 200]
    assert [r.status for r in prices.requests] == [429, 429, 200]


def test_subscriptions_list_like_stripe_without_a_status(stripe_double):
    for status in ("active", "canceled", "past_due"):
        stripe_double.put({"object": "subscription", "id": f"sub_{status}", "status": status})
    _, default = get(stripe_double, "/v1/subscriptions")
    _, everything = get(stripe_double, "/v1/subscriptions?status=all")
    assert {s["id"] for s in default["data"]} == {"sub_active", "sub_past_due"}
    assert len(everything["data"]) == 3

"""The one place the service talks to the Stripe API.

Everything that reads from Stripe (re-fetching a subscription on a same-second tie,
`stripe sync`, `stripe catch-up`) goes through `StripeApi`, so tests can point it at a
local double with `STRIPE_API_BASE` and nothing ever reaches the network by accident.

It is a thin layer over the official library's `StripeClient` that adds what the library
leaves out: retries on 429 (rate limited) with exponential backoff and jitter that honour
`Retry-After` and `Stripe-Should-Retry`, one retry policy for network errors and 5xx, and
plain `dict` results shaped exactly as the API sent them, so callers can treat an object
fetched from the API like the `data.object` of a webhook event.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import stripe

log = logging.getLogger(__name__)

T = TypeVar("T")

# Stripe keeps events for 30 days; asking for older ones returns nothing.
EVENT_RETENTION_SECONDS = 30 * 24 * 3600
# The largest page the list endpoints accept.
MAX_PAGE_SIZE = 100
# `types` filter of GET /v1/events takes at most this many entries.
MAX_EVENT_TYPES = 20


class StripeApiError(Exception):
    """A Stripe API call failed for good (after any retries); the message says what and why."""

    def __init__(self, message: str, *, http_status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.http_status = http_status
        self.code = code


class StripeObjectNotFound(StripeApiError):
    """Stripe answered 404: the object does not exist (in this mode, for this key)."""


class StripeApi:
    """Read Stripe objects as plain dicts, retrying what is worth retrying.

    `api_base` overrides the API's address (`STRIPE_API_BASE`, a local double in tests).
    `sleep` is the clock the backoff waits on; tests pass one that records instead.
    """

    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        *,
        max_retries: int = 5,
        initial_delay: float = 0.5,
        max_delay: float = 30.0,
        timeout: float = 20.0,
        page_size: int = MAX_PAGE_SIZE,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        self.max_retries = max_retries
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.page_size = page_size
        self._sleep = sleep
        # The library's own retries skip 429 and ignore Retry-After: this class retries
        # instead, so the library is told not to and there is one policy, not two stacked.
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base.rstrip("/")} if api_base else None,
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=timeout),
        )

    # -- single objects ----------------------------------------------------------------

    def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]:
        """The subscription as Stripe holds it now (the source of truth on a tie)."""
        obj = self._call(
            f"subscription {subscription_id}",
            lambda: self._client.v1.subscriptions.retrieve(subscription_id),
        )
        return _as_dict(obj)

    def retrieve_customer(self, customer_id: str) -> dict[str, Any]:
        """The customer; a deleted one comes back as `{"id", "deleted": true}`."""
        obj = self._call(
            f"customer {customer_id}",
            lambda: self._client.v1.customers.retrieve(customer_id),
        )
        return _as_dict(obj)

    def retrieve_price(self, price_id: str) -> dict[str, Any]:
        """The price, with the `metadata.plan` and `lookup_key` that map it to a plan."""
        obj = self._call(
            f"price {price_id}",
            lambda: self._client.v1.prices.retrieve(price_id),
        )
        return _as_dict(obj)

    # -- lists, paginated lazily -------------------------------------------------------

    def list_customers(self) -> Iterator[dict[str, Any]]:
        """Every customer, newest first, one page at a time."""
        return self._paginate(
            "customers", lambda params: self._client.v1.customers.list(params), {}
        )

    def list_subscriptions(self, status: str = "all") -> Iterator[dict[str, Any]]:
        """Every subscription with `status` (`all` includes canceled ones), newest first."""
        return self._paginate(
            "subscriptions",
            lambda params: self._client.v1.subscriptions.list(params),
            {"status": status},
        )

    def list_events(
        self, created_gt: int | None = None, types: Sequence[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Events created after `created_gt` (unix seconds), newest first as Stripe lists them.

        Stripe keeps events for 30 days, so the window starts no earlier than that;
        `types` (at most 20) narrows the list to those event types.
        """
        oldest = int(time.time()) - EVENT_RETENTION_SECONDS
        params: dict[str, Any] = {"created": {"gt": max(created_gt or 0, oldest)}}
        if types:
            if len(types) > MAX_EVENT_TYPES:
                raise ValueError(f"Stripe filters on at most {MAX_EVENT_TYPES} event types")
            params["types"] = list(types)
        return self._paginate(
            "events", lambda page_params: self._client.v1.events.list(page_params), params
        )

    # -- machinery ---------------------------------------------------------------------

    def _paginate(
        self,
        what: str,
        fetch_page: Callable[[Any], stripe.ListObject[Any]],
        params: Mapping[str, Any],
    ) -> Iterator[dict[str, Any]]:
        """Walk a list endpoint with `starting_after`, each page retried on its own.

        The library's `auto_paging_iter` would fetch later pages outside the retry policy.
        """
        cursor: str | None = None
        while True:
            page_params: dict[str, Any] = {**params, "limit": self.page_size}
            if cursor is not None:
                page_params["starting_after"] = cursor
            page = self._call(what, functools.partial(fetch_page, page_params))
            items = list(page.data)
            for item in items:
                yield _as_dict(item)
            if not page.has_more or not items:
                return
            cursor = items[-1]["id"]

    def _call(self, what: str, request: Callable[[], T]) -> T:
        """Run `request`, retrying 429s, network errors and 5xx with backoff."""
        attempt = 0
        while True:
            try:
                return request()
            except stripe.StripeError as exc:
                delay = self._retry_delay(exc, attempt)
                if delay is None:
                    raise _translate(exc, what) from exc
                attempt += 1
                log.warning(
                    "stripe.api.retry",
                    extra={
                        "what": what,
                        "http_status": exc.http_status,
                        "attempt": attempt,
                        "delay_seconds": round(delay, 3),
                    },
                )
                self._sleep(delay)

    def _retry_delay(self, exc: stripe.StripeError, attempt: int) -> float | None:
        """Seconds to wait before retrying `exc`, or `None` when it is final."""
        if attempt >= self.max_retries:
            return None
        headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
        should_retry = headers.get("stripe-should-retry")
        status = exc.http_status
        if should_retry == "false":
            return None
        retryable = (
            should_retry == "true"
            # Every call here is a GET, so repeating one after a dropped connection is safe.
            or isinstance(exc, stripe.APIConnectionError)
            or status in (409, 429)
            or (status is not None and status >= 500)
        )
        if not retryable:
            return None
        backoff = min(self.initial_delay * 2.0**attempt, self.max_delay)
        # Jitter in [backoff/2, backoff] keeps several processes from retrying in step.
        delay = backoff * random.uniform(0.5, 1.0)
        retry_after = _seconds(headers.get("retry-after"))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_delay))
        return delay


def _seconds(raw: str | None) -> float | None:
    """`Retry-After` as seconds; the HTTP-date form is not used by Stripe and is ignored."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


def _translate(exc: stripe.StripeError, what: str) -> StripeApiError:
    status = exc.http_status
    message = exc.user_message or type(exc).__name__
    if status == 404:
        return StripeObjectNotFound(
            f"Stripe has no {what} (404 {exc.code or 'resource_missing'}): {message}",
            http_status=status,
            code=exc.code,
        )
    if isinstance(exc, stripe.APIConnectionError):
        detail = f"could not reach the Stripe API: {message}"
    elif status == 429:
        detail = f"rate limited by Stripe (429) after retries: {message}"
    elif status in (401, 403):
        detail = f"Stripe refused the API key ({status}): check STRIPE_API_KEY: {message}"
    else:
        detail = f"Stripe answered {status}: {message}"
    return StripeApiError(f"Reading {what} failed: {detail}", http_status=status, code=exc.code)


def _as_dict(obj: Any) -> dict[str, Any]:
    """The object as the JSON Stripe sent (decimal strings stay strings)."""
    data: dict[str, Any] = obj.to_dict(recursive=True, for_json=True)
    return data

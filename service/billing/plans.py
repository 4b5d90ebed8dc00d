"""The price-to-plan rules and the plan catalogue.

The account-plan and quota rules (which subscription statuses grant their plan, the plan
an account gets from its subscriptions, the quota it gets from that plan or an ops
override) are the SQL functions `billing_grants` and `billing_recompute_account` of
migration 0004, called through `billing.accounts.recompute_account`. What remains here:

- the plan a Stripe price stands for (`plan_for_price`, `plan_for_prices`),
- the catalogue (names, ranks, quotas) read from the `plans` table (`load_catalogue`).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

FREE: Final = "free"
# The statuses `billing_grants` (migration 0004) treats as granting the subscription's
# plan, stated in Python; a test holds the two to each other. `cancel_at_period_end` keeps
# a subscription `active` until Stripe deletes it, so it keeps access until then.
GRANTING_STATUSES: Final = frozenset({"active", "trialing", "past_due"})
# Every status Stripe documents for a subscription; all but GRANTING_STATUSES grant nothing.
SUBSCRIPTION_STATUSES: Final = (
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
)


class UnknownPrice(ValueError):
    """A Stripe price maps to no plan; the message says what ops must configure."""


@dataclass(frozen=True)
class PlanTier:
    """One row of the catalogue."""

    name: str
    rank: int
    requests_per_minute: int
    monthly_requests: int


@dataclass(frozen=True)
class Quota:
    """An account's effective rate limits and where they come from (`plan`/`override`)."""

    requests_per_minute: int
    monthly_requests: int
    source: str


@dataclass(frozen=True)
class Price:
    """What identifies a Stripe price for mapping: its id, `metadata.plan`, `lookup_key`."""

    id: str
    metadata_plan: str | None = None
    lookup_key: str | None = None


Catalogue = Mapping[str, PlanTier]


def plan_for_price(price: Price, plan_price_map: Mapping[str, str], catalogue: Catalogue) -> str:
    """The plan a price stands for: PLAN_PRICE_MAP, then `metadata.plan`, then `lookup_key`.

    Raises `UnknownPrice` rather than falling back to free: a paying customer silently
    left on free is worse than an event that waits for ops to fix the mapping.
    """
    names = ", ".join(sorted(catalogue, key=lambda n: catalogue[n].rank))
    mapped = plan_price_map.get(price.id)
    if mapped is not None:
        if mapped not in catalogue:
            raise UnknownPrice(
                f"PLAN_PRICE_MAP maps price {price.id} to {mapped!r}, which is not a plan "
                f"(plans: {names}); fix PLAN_PRICE_MAP, then replay the event"
            )
        return mapped
    if price.metadata_plan:
        plan = price.metadata_plan.strip().lower()
        if plan in catalogue:
            return plan
    if price.lookup_key:
        key = price.lookup_key.strip().lower()
        for name in catalogue:
            if key == name or key.startswith(name + "_"):
                return name
    seen = []
    if price.metadata_plan:
        seen.append(f"metadata.plan={price.metadata_plan!r}")
    if price.lookup_key:
        seen.append(f"lookup_key={price.lookup_key!r}")
    described = f" ({', '.join(seen)})" if seen else " (no metadata.plan, no lookup_key)"
    raise UnknownPrice(
        f"Stripe price {price.id}{described} maps to no plan: add it to PLAN_PRICE_MAP "
        f"(e.g. PLAN_PRICE_MAP={price.id}=pro), or give the price metadata.plan or a "
        f"lookup_key naming a plan ({names}) in Stripe; then replay the event"
    )


def plan_for_prices(
    prices: Iterable[Price], plan_price_map: Mapping[str, str], catalogue: Catalogue
) -> tuple[str, str | None]:
    """The highest-ranked plan among a subscription's prices and the price that gives it.

    Every price must map (an unmapped add-on is still an unknown price); a subscription
    without any price is free.
    """
    best: tuple[str, str | None] = (FREE, None)
    for price in prices:
        plan = plan_for_price(price, plan_price_map, catalogue)
        if best[1] is None or catalogue[plan].rank > catalogue[best[0]].rank:
            best = (plan, price.id)
    return best


# The catalogue changes only with a migration (a deploy), so each process reads it at most
# once a minute instead of on every event.
_CATALOGUE_TTL_SECONDS = 60.0
_catalogue_cache: dict[str, tuple[float, dict[str, PlanTier]]] = {}
# The cache key of each engine: rendering its URL on every event costs more than the lookup.
_catalogue_keys: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()
_SELECT_PLANS = text("SELECT name, rank, requests_per_minute, monthly_requests FROM plans")


def load_catalogue(bind: Session | Engine) -> Catalogue:
    """The plan catalogue from the `plans` table, cached per database for a minute.

    Given a session, a stale cache is refreshed inside its transaction; given an engine,
    on a connection of its own.
    """
    engine = bind if isinstance(bind, Engine) else bind.get_bind().engine
    key = _catalogue_keys.get(engine)
    if key is None:
        key = _catalogue_keys[engine] = str(engine.url)
    now = time.monotonic()
    cached = _catalogue_cache.get(key)
    if cached is not None and now - cached[0] < _CATALOGUE_TTL_SECONDS:
        return cached[1]
    if isinstance(bind, Engine):
        with bind.connect() as connection:
            rows: Any = connection.execute(_SELECT_PLANS).all()
    else:
        rows = bind.execute(_SELECT_PLANS).all()
    catalogue = {
        row.name: PlanTier(row.name, row.rank, row.requests_per_minute, row.monthly_requests)
        for row in rows
    }
    if FREE not in catalogue:
        raise RuntimeError("The plans table has no 'free' plan: run `webhooks db upgrade`")
    _catalogue_cache[key] = (now, catalogue)
    return catalogue

"""The plan rules as pure functions, tested exhaustively (no database)."""

from __future__ import annotations

import itertools

import pytest

from service.billing import ordering
from service.billing.plans import (
    GRANTING_STATUSES,
    SUBSCRIPTION_STATUSES,
    PlanTier,
    Price,
    Quota,
    UnknownPrice,
    effective_plan,
    effective_quota,
    grants_access,
    plan_for_price,
    plan_for_prices,
)
from service.billing.snapshots import parse_invoice, parse_subscription
from tests.billing import stripe_objects as so

CATALOGUE = {
    "free": PlanTier("free", 0, 10, 1_000),
    "pro": PlanTier("pro", 1, 30, 10_000),
    "scale": PlanTier("scale", 2, 60, 100_000),
    "enterprise": PlanTier("enterprise", 3, 120, 1_000_000),
}
PLANS = tuple(CATALOGUE)


@pytest.mark.parametrize(("status", "plan"), list(itertools.product(SUBSCRIPTION_STATUSES, PLANS)))
def test_one_subscription_grants_its_plan_only_in_a_granting_status(status, plan):
    expected = plan if status in {"active", "trialing", "past_due"} else "free"
    assert effective_plan([(status, plan, False)], CATALOGUE) == expected


@pytest.mark.parametrize(("status", "plan"), list(itertools.product(SUBSCRIPTION_STATUSES, PLANS)))
def test_a_deleted_subscription_grants_nothing_whatever_its_status(status, plan):
    assert effective_plan([(status, plan, True)], CATALOGUE) == "free"


def test_granting_statuses_are_exactly_those_spec_names():
    assert frozenset({"active", "trialing", "past_due"}) == GRANTING_STATUSES
    assert [s for s in SUBSCRIPTION_STATUSES if grants_access(s)] == [
        "trialing",
        "active",
        "past_due",
    ]


@pytest.mark.parametrize(
    ("first", "second"),
    list(itertools.product(itertools.product(SUBSCRIPTION_STATUSES, PLANS), repeat=2)),
)
def test_two_subscriptions_give_the_highest_granted_plan_in_any_order(first, second):
    granted = [plan for status, plan in (first, second) if status in GRANTING_STATUSES]
    expected = max(granted, key=lambda p: CATALOGUE[p].rank, default="free")
    subs = [(*first, False), (*second, False)]
    assert effective_plan(subs, CATALOGUE) == expected
    assert effective_plan(list(reversed(subs)), CATALOGUE) == expected


def test_no_subscription_is_free():
    assert effective_plan([], CATALOGUE) == "free"


@pytest.mark.parametrize("plan", PLANS)
def test_quota_is_the_plans_unless_overridden(plan):
    tier = CATALOGUE[plan]
    assert effective_quota(tier, None) == Quota(
        tier.requests_per_minute, tier.monthly_requests, "plan"
    )
    assert effective_quota(tier, (500, 5_000_000)) == Quota(500, 5_000_000, "override")


# --- price -> plan ------------------------------------------------------------------


def test_plan_price_map_comes_first():
    price = Price("price_x", metadata_plan="scale", lookup_key="enterprise")
    assert plan_for_price(price, {"price_x": "pro"}, CATALOGUE) == "pro"


def test_metadata_plan_comes_before_lookup_key():
    price = Price("price_x", metadata_plan="Scale", lookup_key="enterprise")
    assert plan_for_price(price, {}, CATALOGUE) == "scale"


@pytest.mark.parametrize(
    ("lookup_key", "plan"),
    [
        ("pro", "pro"),
        ("pro_monthly", "pro"),
        ("scale_yearly_2025", "scale"),
        ("enterprise", "enterprise"),
        ("free", "free"),
    ],
)
def test_lookup_key_names_the_plan_or_prefixes_it(lookup_key, plan):
    assert plan_for_price(Price("price_x", lookup_key=lookup_key), {}, CATALOGUE) == plan


@pytest.mark.parametrize("lookup_key", ["professional", "promo", "gold_monthly", "pro-monthly"])
def test_a_lookup_key_that_only_looks_like_a_plan_is_unknown(lookup_key):
    with pytest.raises(UnknownPrice):
        plan_for_price(Price("price_x", lookup_key=lookup_key), {}, CATALOGUE)


def test_an_unknown_price_tells_ops_what_to_configure():
    with pytest.raises(UnknownPrice) as info:
        plan_for_price(Price("price_x", metadata_plan="gold"), {}, CATALOGUE)
    message = str(info.value)
    assert "price_x" in message
    assert "PLAN_PRICE_MAP=price_x=pro" in message
    assert "metadata.plan='gold'" in message
    assert "free, pro, scale, enterprise" in message
    assert "replay" in message


def test_a_price_map_naming_no_plan_is_an_error_not_free():
    with pytest.raises(UnknownPrice, match="PLAN_PRICE_MAP maps price price_x to 'gold'"):
        plan_for_price(Price("price_x"), {"price_x": "gold"}, CATALOGUE)


def test_a_subscription_takes_its_highest_ranked_price():
    prices = [Price("p1", lookup_key="pro"), Price("p2", metadata_plan="scale")]
    assert plan_for_prices(prices, {}, CATALOGUE) == ("scale", "p2")
    assert plan_for_prices(list(reversed(prices)), {}, CATALOGUE) == ("scale", "p2")
    assert plan_for_prices([], {}, CATALOGUE) == ("free", None)


def test_every_price_of_a_subscription_must_map():
    with pytest.raises(UnknownPrice):
        plan_for_prices([Price("p1", lookup_key="pro"), Price("p2")], {}, CATALOGUE)


# --- both API shapes read alike -----------------------------------------------------


def test_subscription_shapes_of_both_api_versions_read_the_same():
    basil = parse_subscription(so.subscription("active", so.SCALE, api=so.BASIL))
    legacy = parse_subscription(so.subscription("active", so.SCALE, api=so.LEGACY))
    assert basil == legacy
    assert (basil.current_period_start, basil.current_period_end) == (so.T0, so.T0 + so.MONTH)
    assert basil.prices == (Price(so.SCALE["id"], metadata_plan="scale"),)


def test_invoice_shapes_of_both_api_versions_read_the_same():
    basil = parse_invoice(so.invoice("paid", api=so.BASIL))
    legacy = parse_invoice(so.invoice("paid", api=so.LEGACY))
    assert basil == legacy
    assert basil.subscription_id == so.SUBSCRIPTION_ID


def test_an_expanded_invoice_subscription_is_read_by_id():
    obj = so.invoice("paid", api=so.LEGACY)
    obj["subscription"] = {"id": "sub_expanded", "object": "subscription"}
    assert parse_invoice(obj).subscription_id == "sub_expanded"


# --- the ordering key ---------------------------------------------------------------


def _key(deleted=False, created=100, status="active", digest="d", event_id="evt_1"):
    return ordering.subscription_key(
        deleted=deleted, created=created, status=status, snapshot_digest=digest, event_id=event_id
    )


@pytest.mark.parametrize(
    ("a", "b"), list(itertools.permutations(ordering.SUBSCRIPTION_PRECEDENCE, 2))
)
def test_same_second_tie_is_decided_by_the_fixed_status_precedence(a, b):
    winner = max(a, b, key=ordering.SUBSCRIPTION_PRECEDENCE.__getitem__)
    assert max(_key(status=a), _key(status=b))[2] == ordering.subscription_precedence(winner)


def test_a_deleted_snapshot_beats_any_newer_live_one():
    assert _key(deleted=True, created=1, status="canceled") > _key(created=10**9)


def test_newer_beats_older_whatever_the_status():
    assert _key(created=101, status="incomplete") > _key(created=100, status="canceled")


def test_same_status_same_second_falls_back_to_digest_then_event_id():
    assert _key(digest="b") > _key(digest="a", event_id="evt_9")
    assert _key(event_id="evt_2") > _key(event_id="evt_1")


def test_the_lifecycle_order_of_statuses():
    assert sorted(ordering.SUBSCRIPTION_PRECEDENCE, key=ordering.subscription_precedence) == [
        "incomplete",
        "trialing",
        "active",
        "past_due",
        "unpaid",
        "paused",
        "incomplete_expired",
        "canceled",
    ]
    assert ordering.subscription_precedence("something_new") < 0

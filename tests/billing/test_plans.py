"""The plan rules: the account-plan and quota rules as the SQL functions of migration
0004 against the real database, exhaustively over statuses and plans; the price-to-plan
rules, the snapshot readers and the ordering key as pure functions."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from service.billing import ordering
from service.billing.accounts import (
    AccountState,
    Cause,
    ensure_account,
    recompute_account,
    set_quota_override,
)
from service.billing.plans import (
    GRANTING_STATUSES,
    SUBSCRIPTION_STATUSES,
    PlanTier,
    Price,
    Quota,
    UnknownPrice,
    load_catalogue,
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
ONE_SUBSCRIPTION = list(itertools.product(SUBSCRIPTION_STATUSES, PLANS))

# --- the account-plan and quota rules (SQL functions of migration 0004) ---------------

ACCOUNT = so.ACCOUNT_ID
CAUSE = Cause.ops("test")

_DELETE_SUBSCRIPTIONS = text("DELETE FROM subscriptions WHERE account_id = :account_id")
_INSERT_SUBSCRIPTION = text(
    """
    INSERT INTO subscriptions (id, customer_id, account_id, status, plan, deleted,
                               status_precedence, snapshot_digest, applied_event_created)
    VALUES (:id, :customer_id, :account_id, :status, :plan, :deleted,
            :status_precedence, 'digest', now())
    """
)
_AUDIT_ROWS = text("SELECT count(*) FROM audit_log WHERE account_id = :account_id")


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """One transaction holding an account on free and no subscriptions, rolled back after."""
    with Session(engine) as session, session.begin():
        ensure_account(session, ACCOUNT)
        yield session
        session.rollback()


def _set_subscriptions(session: Session, *subscriptions: tuple[str, str, bool]) -> AccountState:
    """Give the account exactly `(status, plan, deleted)` subscriptions, in that order, and
    recompute it."""
    session.execute(_DELETE_SUBSCRIPTIONS, {"account_id": ACCOUNT})
    if subscriptions:
        session.execute(
            _INSERT_SUBSCRIPTION,
            [
                {
                    "id": f"sub_{n}",
                    "customer_id": so.CUSTOMER_ID,
                    "account_id": ACCOUNT,
                    "status": status,
                    "plan": plan,
                    "deleted": deleted,
                    "status_precedence": ordering.subscription_precedence(status),
                }
                for n, (status, plan, deleted) in enumerate(subscriptions)
            ],
        )
    return recompute_account(session, ACCOUNT, CAUSE)


def _grants(session: Session, status: str, plan: str, deleted: bool) -> str | None:
    granted: str | None = session.execute(
        text("SELECT billing_grants(:status, :plan, :deleted)"),
        {"status": status, "plan": plan, "deleted": deleted},
    ).scalar_one()
    return granted


def _audit_rows(session: Session) -> int:
    count: int = session.execute(_AUDIT_ROWS, {"account_id": ACCOUNT}).scalar_one()
    return count


def test_the_test_catalogue_is_the_seeded_one(session):
    assert load_catalogue(session) == CATALOGUE


def test_one_subscription_grants_its_plan_only_in_a_granting_status(session):
    for status, plan in ONE_SUBSCRIPTION:
        expected = plan if status in {"active", "trialing", "past_due"} else "free"
        state = _set_subscriptions(session, (status, plan, False))
        assert state.plan == expected, f"one subscription ({status}, {plan})"


def test_a_deleted_subscription_grants_nothing_whatever_its_status(session):
    for status, plan in ONE_SUBSCRIPTION:
        state = _set_subscriptions(session, (status, plan, True))
        assert state.plan == "free", f"one deleted subscription ({status}, {plan})"


def test_granting_statuses_are_exactly_those_spec_names(session):
    assert frozenset({"active", "trialing", "past_due"}) == GRANTING_STATUSES
    for status, plan in ONE_SUBSCRIPTION:
        expected = plan if status in GRANTING_STATUSES else None
        assert _grants(session, status, plan, False) == expected, (status, plan)
        assert _grants(session, status, plan, True) is None, (status, plan, "deleted")
    assert [s for s in SUBSCRIPTION_STATUSES if _grants(session, s, "pro", False)] == [
        "trialing",
        "active",
        "past_due",
    ]


def test_two_subscriptions_give_the_highest_granted_plan_in_any_order(session):
    cases = list(itertools.product(ONE_SUBSCRIPTION, repeat=2))
    assert len(cases) == 1024
    for first, second in cases:
        granted = [plan for status, plan in (first, second) if status in GRANTING_STATUSES]
        expected = max(granted, key=lambda p: CATALOGUE[p].rank, default="free")
        for subs in ((first, second), (second, first)):
            state = _set_subscriptions(session, *((*sub, False) for sub in subs))
            assert state.plan == expected, f"subscriptions {subs}: got {state.plan}"


def test_no_subscription_is_free(session):
    _set_subscriptions(session, ("active", "scale", False))
    state = _set_subscriptions(session)
    tier = CATALOGUE["free"]
    assert state == AccountState(
        "free", Quota(tier.requests_per_minute, tier.monthly_requests, "plan")
    )


def test_quota_is_the_plans_unless_overridden(session):
    for plan in PLANS:
        tier = CATALOGUE[plan]
        state = _set_subscriptions(session, ("active", plan, False))
        assert state == AccountState(
            plan, Quota(tier.requests_per_minute, tier.monthly_requests, "plan")
        ), plan
        state = set_quota_override(session, ACCOUNT, 500, 5_000_000, ops_action="test")
        assert state == AccountState(plan, Quota(500, 5_000_000, "override")), plan
        session.execute(text("DELETE FROM quota_overrides WHERE account_id = :a"), {"a": ACCOUNT})
        state = recompute_account(session, ACCOUNT, CAUSE)
        assert state.quota == Quota(tier.requests_per_minute, tier.monthly_requests, "plan"), plan


def test_an_override_survives_a_plan_change(session):
    set_quota_override(session, ACCOUNT, 500, 5_000_000, ops_action="test")
    for plan in PLANS:
        state = _set_subscriptions(session, ("active", plan, False))
        assert state == AccountState(plan, Quota(500, 5_000_000, "override")), plan


def test_an_audit_row_is_written_only_when_something_changed(session):
    assert _audit_rows(session) == 0
    _set_subscriptions(session, ("canceled", "pro", True))
    assert _audit_rows(session) == 0, "nothing changed: still free"
    _set_subscriptions(session, ("active", "pro", False))
    assert _audit_rows(session) == 1, "free -> pro"
    _set_subscriptions(session, ("past_due", "pro", False))
    recompute_account(session, ACCOUNT, CAUSE)
    assert _audit_rows(session) == 1, "still pro with the plan's quota"
    set_quota_override(session, ACCOUNT, 500, 5_000_000, ops_action="test")
    assert _audit_rows(session) == 2, "the quota changed"
    set_quota_override(session, ACCOUNT, 500, 5_000_000, ops_action="test")
    assert _audit_rows(session) == 2, "the same override again"
    _set_subscriptions(session)
    assert _audit_rows(session) == 3, "pro -> free"


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

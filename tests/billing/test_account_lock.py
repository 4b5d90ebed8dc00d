"""Two transactions changing one account through different customers stay consistent.

Events of one customer are serialised by its advisory lock, but one account may have
several customers (and ops act on accounts directly). The account row lock orders their
recomputes; the one that waited must then see what the other committed.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine, text

from service.billing.accounts import Cause, set_quota_override
from service.billing.stripe_objects import apply_subscription_snapshot, link_customer
from service.db import transaction
from tests.billing import stripe_objects as so
from tests.billing.db import quota

ACCOUNT = "acc_two_customers"


def _wait_until_blocked_on_a_lock(engine: Engine, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    with engine.connect() as c:
        while time.monotonic() < deadline:
            waiting = c.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
            if waiting:
                return
            # pg_stat_activity is read once per transaction: end it to see fresh state.
            c.rollback()
            time.sleep(0.01)
    raise AssertionError("the second transaction never waited for the account lock")


def _apply(session, sub_id, customer, price, created, status="active"):
    apply_subscription_snapshot(
        session,
        so.subscription(status, price, sub_id=sub_id, customer=customer),
        created=created,
        cause=Cause.event(f"evt_{sub_id}"),
        plan_price_map={},
    )


def test_a_recompute_that_waited_for_the_account_sees_the_committed_change(engine):
    with transaction(engine) as session:
        link_customer(session, "cus_A", ACCOUNT)
        link_customer(session, "cus_B", ACCOUNT)
        # Both subscriptions exist already, so updating them takes no foreign-key lock on
        # the account: the only wait is the recompute's.
        _apply(session, "sub_A", "cus_A", so.SCALE, so.T0, status="incomplete")
        _apply(session, "sub_B", "cus_B", so.PRO, so.T0, status="incomplete")

    errors: list[BaseException] = []

    def second() -> None:
        try:
            with transaction(engine) as session:
                _apply(session, "sub_B", "cus_B", so.PRO, so.T0 + 2)
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)

    with transaction(engine) as session:
        _apply(session, "sub_A", "cus_A", so.SCALE, so.T0 + 1)  # holds the account lock
        thread = threading.Thread(target=second)
        thread.start()
        _wait_until_blocked_on_a_lock(engine)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert errors == []
    assert quota(engine, ACCOUNT) == ("scale", 60, 100_000, "plan")


def test_an_override_set_while_an_event_waits_is_kept(engine):
    with transaction(engine) as session:
        link_customer(session, "cus_A", ACCOUNT)
        _apply(session, "sub_A", "cus_A", so.SCALE, so.T0, status="incomplete")

    errors: list[BaseException] = []

    def event() -> None:
        try:
            with transaction(engine) as session:
                _apply(session, "sub_A", "cus_A", so.SCALE, so.T0 + 1)
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)

    with transaction(engine) as session:
        set_quota_override(session, ACCOUNT, 999, 9_999_999, ops_action="quota set via CLI")
        thread = threading.Thread(target=event)
        thread.start()
        _wait_until_blocked_on_a_lock(engine)
    thread.join(timeout=30)
    assert errors == []
    assert quota(engine, ACCOUNT) == ("scale", 999, 9_999_999, "override")

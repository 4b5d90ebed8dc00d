"""Fixtures of the ops tests: an application with an ops token, and billing rows to read.

`seed_account` writes the rows the billing domain would have written (account, customer,
subscription, invoice, override, audit entries), so read paths are tested against exact,
known state; the flows that go through the billing code (replays, sync, catch-up) deliver
real signed events or call the same functions the webhooks use.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service.billing.models import (
    Account,
    AuditEntry,
    Invoice,
    QuotaOverride,
    StripeCustomer,
    Subscription,
)
from service.config import Settings

from ..helpers import TEST_SECRET

OPS_TOKEN = "ops-token-for-the-suite"
PLAN_QUOTAS = {
    "free": (10, 1_000),
    "pro": (30, 10_000),
    "scale": (60, 100_000),
    "enterprise": (120, 1_000_000),
}
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        stripe_webhook_secrets=(TEST_SECRET,),
        database_url=database_url,
        database_timeout=3.0,
        log_level="WARNING",
        ops_token=OPS_TOKEN,
    )


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {OPS_TOKEN}"}


SeedAccount = Callable[..., dict[str, Any]]


@pytest.fixture
def seed_account(engine: Engine) -> SeedAccount:
    """Write one account with a customer, a subscription, an invoice and an audit trail."""

    def seed(
        account_id: str = "acct_1",
        *,
        plan: str = "pro",
        customer_id: str | None = "cus_1",
        email: str | None = "owner@example.com",
        subscription_status: str = "active",
        override: tuple[int, int] | None = None,
        invoice_failed: bool = False,
    ) -> dict[str, Any]:
        rpm, monthly = override or PLAN_QUOTAS[plan]
        with Session(engine) as session, session.begin():
            session.add(
                Account(
                    id=account_id,
                    email=email,
                    plan=plan,
                    requests_per_minute=rpm,
                    monthly_requests=monthly,
                    quota_source="override" if override else "plan",
                    plan_since=T0 + timedelta(days=1),
                    updated_at=T0 + timedelta(days=2),
                )
            )
            session.flush()
            free_rpm, free_monthly = PLAN_QUOTAS["free"]
            plan_rpm, plan_monthly = PLAN_QUOTAS[plan]
            session.add(
                AuditEntry(
                    account_id=account_id,
                    at=T0 + timedelta(days=1),
                    plan_before="free",
                    plan_after=plan,
                    requests_per_minute_before=free_rpm,
                    requests_per_minute_after=plan_rpm,
                    monthly_requests_before=free_monthly,
                    monthly_requests_after=plan_monthly,
                    quota_source_before="plan",
                    quota_source_after="plan",
                    cause_event_id=f"evt_{account_id}_upgrade",
                )
            )
            if override:
                session.add(
                    QuotaOverride(
                        account_id=account_id,
                        requests_per_minute=rpm,
                        monthly_requests=monthly,
                        reason="enterprise deal",
                        set_by="alice",
                        set_at=T0 + timedelta(days=2),
                    )
                )
                session.add(
                    AuditEntry(
                        account_id=account_id,
                        at=T0 + timedelta(days=2),
                        plan_before=plan,
                        plan_after=plan,
                        requests_per_minute_before=plan_rpm,
                        requests_per_minute_after=rpm,
                        monthly_requests_before=plan_monthly,
                        monthly_requests_after=monthly,
                        quota_source_before="plan",
                        quota_source_after="override",
                        cause_ops_action="quota set by alice: enterprise deal",
                    )
                )
            if customer_id:
                session.add(StripeCustomer(id=customer_id, account_id=account_id, email=email))
                sub_id = f"sub_{account_id}"
                session.add(
                    Subscription(
                        id=sub_id,
                        customer_id=customer_id,
                        account_id=account_id,
                        status=subscription_status,
                        price_id=f"price_{plan}",
                        plan=plan,
                        current_period_end=T0 + timedelta(days=31),
                        cancel_at_period_end=False,
                        status_precedence=0,
                        snapshot_digest="seed",
                        applied_event_created=T0 + timedelta(days=1),
                    )
                )
                session.add(
                    Invoice(
                        id=f"in_{account_id}",
                        customer_id=customer_id,
                        account_id=account_id,
                        subscription_id=sub_id,
                        status="open" if invoice_failed else "paid",
                        amount_due=2900,
                        amount_paid=0 if invoice_failed else 2900,
                        amount_remaining=2900 if invoice_failed else 0,
                        currency="usd",
                        attempt_count=1,
                        next_payment_attempt=T0 + timedelta(days=3) if invoice_failed else None,
                        status_precedence=0,
                        snapshot_digest="seed",
                        applied_event_created=T0 + timedelta(days=1),
                    )
                )
        return {"account_id": account_id, "customer_id": customer_id}

    return seed

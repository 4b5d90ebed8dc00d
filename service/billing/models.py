"""The billing tables: plan catalogue, accounts, their Stripe objects, overrides, audit.

`accounts` holds the effective plan and quota (denormalised, so the External API reads one
row through the `account_quotas` view); everything else is the evidence it is derived
from. Subscriptions and invoices remember the newest snapshot applied to them
(`applied_event_created`, `status_precedence`, `snapshot_digest`, `applied_event_id`) so
older or duplicated events can never overwrite newer state (see `billing.ordering`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    SmallInteger,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base

SOURCE_PLAN: Final = "plan"
SOURCE_OVERRIDE: Final = "override"


class AppliedSnapshot:
    """The key of the newest snapshot applied to a Stripe object, compared by the upserts
    in `billing.stripe_objects` (see `billing.ordering`), and the row's own timestamps."""

    status_precedence: Mapped[int] = mapped_column(SmallInteger)
    snapshot_digest: Mapped[str] = mapped_column(Text)
    applied_event_id: Mapped[str | None] = mapped_column(Text)
    applied_event_created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Plan(Base):
    """One tier of the catalogue (seeded by migration 0002); `rank` orders the tiers."""

    __tablename__ = "plans"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, unique=True)
    requests_per_minute: Mapped[int] = mapped_column(Integer)
    monthly_requests: Mapped[int] = mapped_column(BigInteger)


class Account(Base):
    """A customer account of the product, with its effective plan and quota."""

    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("quota_source IN ('plan', 'override')", name="quota_source"),
        Index("ix_accounts_plan", "plan"),
        # Ops search by email, case-insensitive (migration 0003).
        Index("ix_accounts_email_lower", func.lower(text("email"))),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    email: Mapped[str | None] = mapped_column(Text)
    plan: Mapped[str] = mapped_column(Text, ForeignKey("plans.name"), server_default="free")
    requests_per_minute: Mapped[int] = mapped_column(Integer)
    monthly_requests: Mapped[int] = mapped_column(BigInteger)
    quota_source: Mapped[str] = mapped_column(Text, server_default=SOURCE_PLAN)
    plan_since: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class StripeCustomer(Base):
    """A Stripe customer linked to an account (a customer is stored once it is linked)."""

    __tablename__ = "stripe_customers"
    __table_args__ = (
        Index("ix_stripe_customers_account_id", "account_id"),
        # Ops search by email, case-insensitive (migration 0003).
        Index("ix_stripe_customers_email_lower", func.lower(text("email"))),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    account_id: Mapped[str] = mapped_column(Text, ForeignKey("accounts.id", ondelete="CASCADE"))
    email: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    deleted: Mapped[bool] = mapped_column(Boolean, server_default="false")
    applied_event_id: Mapped[str | None] = mapped_column(Text)
    applied_event_created: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    snapshot_digest: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Subscription(AppliedSnapshot, Base):
    """The newest applied snapshot of one Stripe subscription.

    `deleted` is set once the subscription has ended for good (`customer.subscription.deleted`,
    status `canceled` or `incomplete_expired`); no later snapshot revives it.
    """

    __tablename__ = "subscriptions"
    __table_args__ = (
        Index("ix_subscriptions_account_id", "account_id"),
        Index("ix_subscriptions_customer_id", "customer_id"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    customer_id: Mapped[str] = mapped_column(Text)
    account_id: Mapped[str] = mapped_column(Text, ForeignKey("accounts.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(Text)
    price_id: Mapped[str | None] = mapped_column(Text)
    plan: Mapped[str] = mapped_column(Text, ForeignKey("plans.name"))
    current_period_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    current_period_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, server_default="false")
    cancel_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    canceled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    trial_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    trial_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted: Mapped[bool] = mapped_column(Boolean, server_default="false")


class Invoice(AppliedSnapshot, Base):
    """The newest applied snapshot of one Stripe invoice (what ops see about payments)."""

    __tablename__ = "invoices"
    __table_args__ = (
        Index("ix_invoices_account_id", "account_id"),
        Index("ix_invoices_subscription_id", "subscription_id"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    customer_id: Mapped[str] = mapped_column(Text)
    account_id: Mapped[str] = mapped_column(Text, ForeignKey("accounts.id", ondelete="CASCADE"))
    subscription_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(Text)
    amount_due: Mapped[int] = mapped_column(BigInteger, server_default="0")
    amount_paid: Mapped[int] = mapped_column(BigInteger, server_default="0")
    amount_remaining: Mapped[int] = mapped_column(BigInteger, server_default="0")
    currency: Mapped[str | None] = mapped_column(Text)
    attempt_count: Mapped[int] = mapped_column(Integer, server_default="0")
    next_payment_attempt: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    hosted_invoice_url: Mapped[str | None] = mapped_column(Text)
    billing_reason: Mapped[str | None] = mapped_column(Text)


class QuotaOverride(Base):
    """An ops-set quota for one account; wins over the plan's defaults until cleared."""

    __tablename__ = "quota_overrides"

    account_id: Mapped[str] = mapped_column(
        Text, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    requests_per_minute: Mapped[int] = mapped_column(Integer)
    monthly_requests: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(Text)
    set_by: Mapped[str] = mapped_column(Text)
    set_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AuditEntry(Base):
    """One change of an account's plan or quota, naming the event or ops action behind it."""

    __tablename__ = "audit_log"
    __table_args__ = (
        CheckConstraint("(cause_event_id IS NULL) <> (cause_ops_action IS NULL)", name="one_cause"),
        Index("ix_audit_log_account_id_at", "account_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    account_id: Mapped[str] = mapped_column(Text, ForeignKey("accounts.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    plan_before: Mapped[str] = mapped_column(Text)
    plan_after: Mapped[str] = mapped_column(Text)
    requests_per_minute_before: Mapped[int] = mapped_column(Integer)
    requests_per_minute_after: Mapped[int] = mapped_column(Integer)
    monthly_requests_before: Mapped[int] = mapped_column(BigInteger)
    monthly_requests_after: Mapped[int] = mapped_column(BigInteger)
    quota_source_before: Mapped[str] = mapped_column(Text)
    quota_source_after: Mapped[str] = mapped_column(Text)
    cause_event_id: Mapped[str | None] = mapped_column(Text)
    cause_ops_action: Mapped[str | None] = mapped_column(Text)

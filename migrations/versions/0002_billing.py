"""billing: plan catalogue, accounts, Stripe customers, subscriptions, invoices,
quota overrides, audit log and the account_quotas view

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)

# The catalogue SPEC defines; code reads it from here, never from constants.
PLANS = [
    {"name": "free", "rank": 0, "requests_per_minute": 10, "monthly_requests": 1_000},
    {"name": "pro", "rank": 1, "requests_per_minute": 30, "monthly_requests": 10_000},
    {"name": "scale", "rank": 2, "requests_per_minute": 60, "monthly_requests": 100_000},
    {"name": "enterprise", "rank": 3, "requests_per_minute": 120, "monthly_requests": 1_000_000},
]


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TZ, server_default=sa.func.now(), nullable=False),
    ]


def _applied_snapshot() -> list[sa.Column[object]]:
    return [
        sa.Column("status_precedence", sa.SmallInteger(), nullable=False),
        sa.Column("snapshot_digest", sa.Text(), nullable=False),
        sa.Column("applied_event_id", sa.Text(), nullable=True),
        sa.Column("applied_event_created", TZ, nullable=False),
    ]


def upgrade() -> None:
    plans = op.create_table(
        "plans",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("requests_per_minute", sa.Integer(), nullable=False),
        sa.Column("monthly_requests", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_plans")),
        sa.UniqueConstraint("rank", name=op.f("uq_plans_rank")),
    )
    op.bulk_insert(plans, PLANS)

    op.create_table(
        "accounts",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("plan", sa.Text(), server_default="free", nullable=False),
        sa.Column("requests_per_minute", sa.Integer(), nullable=False),
        sa.Column("monthly_requests", sa.BigInteger(), nullable=False),
        sa.Column("quota_source", sa.Text(), server_default="plan", nullable=False),
        sa.Column("plan_since", TZ, server_default=sa.func.now(), nullable=False),
        *_timestamps(),
        sa.CheckConstraint(
            "quota_source IN ('plan', 'override')", name=op.f("ck_accounts_quota_source")
        ),
        sa.ForeignKeyConstraint(["plan"], ["plans.name"], name=op.f("fk_accounts_plan_plans")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
    )
    op.create_index("ix_accounts_plan", "accounts", ["plan"])

    op.create_table(
        "stripe_customers",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("deleted", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("applied_event_id", sa.Text(), nullable=True),
        sa.Column("applied_event_created", TZ, nullable=True),
        sa.Column("snapshot_digest", sa.Text(), nullable=True),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_stripe_customers_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_customers")),
    )
    op.create_index("ix_stripe_customers_account_id", "stripe_customers", ["account_id"])

    op.create_table(
        "subscriptions",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("price_id", sa.Text(), nullable=True),
        sa.Column("plan", sa.Text(), nullable=False),
        sa.Column("current_period_start", TZ, nullable=True),
        sa.Column("current_period_end", TZ, nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("cancel_at", TZ, nullable=True),
        sa.Column("canceled_at", TZ, nullable=True),
        sa.Column("ended_at", TZ, nullable=True),
        sa.Column("trial_start", TZ, nullable=True),
        sa.Column("trial_end", TZ, nullable=True),
        sa.Column("deleted", sa.Boolean(), server_default="false", nullable=False),
        *_applied_snapshot(),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_subscriptions_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["plan"], ["plans.name"], name=op.f("fk_subscriptions_plan_plans")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
    )
    op.create_index("ix_subscriptions_account_id", "subscriptions", ["account_id"])
    op.create_index("ix_subscriptions_customer_id", "subscriptions", ["customer_id"])

    op.create_table(
        "invoices",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("subscription_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("amount_due", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("amount_paid", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("amount_remaining", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("attempt_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_payment_attempt", TZ, nullable=True),
        sa.Column("hosted_invoice_url", sa.Text(), nullable=True),
        sa.Column("billing_reason", sa.Text(), nullable=True),
        *_applied_snapshot(),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_invoices_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
    )
    op.create_index("ix_invoices_account_id", "invoices", ["account_id"])
    op.create_index("ix_invoices_subscription_id", "invoices", ["subscription_id"])

    op.create_table(
        "quota_overrides",
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("requests_per_minute", sa.Integer(), nullable=False),
        sa.Column("monthly_requests", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("set_by", sa.Text(), nullable=False),
        sa.Column("set_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_quota_overrides_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_quota_overrides")),
    )

    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("plan_before", sa.Text(), nullable=False),
        sa.Column("plan_after", sa.Text(), nullable=False),
        sa.Column("requests_per_minute_before", sa.Integer(), nullable=False),
        sa.Column("requests_per_minute_after", sa.Integer(), nullable=False),
        sa.Column("monthly_requests_before", sa.BigInteger(), nullable=False),
        sa.Column("monthly_requests_after", sa.BigInteger(), nullable=False),
        sa.Column("quota_source_before", sa.Text(), nullable=False),
        sa.Column("quota_source_after", sa.Text(), nullable=False),
        sa.Column("cause_event_id", sa.Text(), nullable=True),
        sa.Column("cause_ops_action", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "(cause_event_id IS NULL) <> (cause_ops_action IS NULL)",
            name=op.f("ck_audit_log_one_cause"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_audit_log_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_account_id_at", "audit_log", ["account_id", "at"])

    # The External API's read contract: keep these columns and their meaning stable.
    op.execute(
        """
        CREATE VIEW account_quotas AS
        SELECT id AS account_id, plan, requests_per_minute, monthly_requests,
               quota_source AS source, updated_at
          FROM accounts
        """
    )


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS account_quotas")
    for table in (
        "audit_log",
        "quota_overrides",
        "invoices",
        "subscriptions",
        "stripe_customers",
        "accounts",
        "plans",
    ):
        op.drop_table(table)

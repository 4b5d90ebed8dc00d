"""ops lookups: events by account, failed events, accounts and customers by email

The ops account page lists an account's events, the failed-events list and `events replay
--failed` read failed and dead events (`dead` is outside the backlog index), and the ops
search finds accounts by email in any case; without these indexes each would scan a whole
table as it grows. The failed index stays small: it holds only events that need ops.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_stripe_events_account_id",
        "stripe_events",
        ["account_id"],
        postgresql_where=sa.text("account_id IS NOT NULL"),
    )
    op.create_index(
        "ix_stripe_events_needs_ops",
        "stripe_events",
        ["received_at"],
        postgresql_where=sa.text("status IN ('failed', 'dead')"),
    )
    op.create_index("ix_accounts_email_lower", "accounts", [sa.text("lower(email)")])
    op.create_index(
        "ix_stripe_customers_email_lower", "stripe_customers", [sa.text("lower(email)")]
    )


def downgrade() -> None:
    op.drop_index("ix_stripe_customers_email_lower", table_name="stripe_customers")
    op.drop_index("ix_accounts_email_lower", table_name="accounts")
    op.drop_index("ix_stripe_events_needs_ops", table_name="stripe_events")
    op.drop_index("ix_stripe_events_account_id", table_name="stripe_events")

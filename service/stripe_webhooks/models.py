"""The durable record of every verified Stripe event.

The Stripe event id is the primary key, so a redelivered event can never become a second
row: duplicates are decided by `INSERT ... ON CONFLICT`, never by looking first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import CheckConstraint, DateTime, Index, Integer, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base

RECEIVED: Final = "received"
PROCESSED: Final = "processed"
IGNORED: Final = "ignored"
PENDING: Final = "pending"
FAILED: Final = "failed"
DEAD: Final = "dead"
EVENT_STATUSES: Final = (RECEIVED, PROCESSED, IGNORED, PENDING, FAILED, DEAD)
# Statuses whose redelivery is answered `duplicate`: nothing is left to do for them.
SETTLED_STATUSES: Final = frozenset({PROCESSED, IGNORED})


class StripeEvent(Base):
    """One Stripe event as delivered, with where its processing stands."""

    __tablename__ = "stripe_events"
    __table_args__ = (
        CheckConstraint(
            "status IN ('received', 'processed', 'ignored', 'pending', 'failed', 'dead')",
            name="status",
        ),
        Index("ix_stripe_events_customer_id", "customer_id"),
        Index("ix_stripe_events_received_at", "received_at"),
        # The ops pages: an account's event timeline, and the failed-events list (0003).
        Index(
            "ix_stripe_events_account_id",
            "account_id",
            postgresql_where=text("account_id IS NOT NULL"),
        ),
        Index(
            "ix_stripe_events_needs_ops",
            "received_at",
            postgresql_where=text("status IN ('failed', 'dead')"),
        ),
        Index(
            "ix_stripe_events_backlog",
            "status",
            "next_attempt_at",
            postgresql_where=text("status IN ('failed', 'pending', 'received')"),
        ),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    type: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    livemode: Mapped[bool]
    api_version: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    status: Mapped[str] = mapped_column(Text, server_default=RECEIVED)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    customer_id: Mapped[str | None] = mapped_column(Text)
    account_id: Mapped[str | None] = mapped_column(Text)

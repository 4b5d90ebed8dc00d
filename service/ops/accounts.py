"""Reading accounts for ops: the account document, lists, search, and the audit trail.

One account document answers "what plan and quota does this account have, why, and since
when?": `plan` and `quota` (with `source`: the plan's defaults or an ops override), and
beside the SPEC's fields `plan_since`, the `override` when there is one, `plan_change` (the
audit entry that set the current plan) and `last_change` (the newest audit entry), each
naming the Stripe event or ops action behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import exists, func, or_, select, tuple_
from sqlalchemy.orm import Session

from ..billing.models import (
    Account,
    AuditEntry,
    Invoice,
    QuotaOverride,
    StripeCustomer,
    Subscription,
)
from ..stripe_webhooks.models import StripeEvent
from .events import iso
from .pagination import InvalidQuery, decode_cursor, encode_cursor

PLANS: Final = ("free", "pro", "scale", "enterprise")
SUBSCRIPTION_STATUSES: Final = (
    "active",
    "trialing",
    "past_due",
    "unpaid",
    "paused",
    "canceled",
    "incomplete",
    "incomplete_expired",
)
# Invoice states ops must notice: money was asked for and not collected.
FAILED_INVOICE_STATUSES: Final = frozenset({"open", "uncollectible"})


def get_account(session: Session, account_id: str) -> Account | None:
    return session.get(Account, account_id)


def account_for_customer(session: Session, customer_id: str) -> Account | None:
    """The account a Stripe customer is linked to, if any."""
    return session.scalar(
        select(Account)
        .join(StripeCustomer, StripeCustomer.account_id == Account.id)
        .where(StripeCustomer.id == customer_id)
    )


def customers_of(session: Session, account_id: str) -> list[StripeCustomer]:
    """The account's Stripe customers, current (not deleted, newest) first."""
    return list(
        session.scalars(
            select(StripeCustomer)
            .where(StripeCustomer.account_id == account_id)
            .order_by(StripeCustomer.deleted, StripeCustomer.created_at.desc())
        )
    )


def subscriptions_of(session: Session, account_id: str) -> list[Subscription]:
    """The account's subscriptions, live ones first, newest first within each."""
    return list(
        session.scalars(
            select(Subscription)
            .where(Subscription.account_id == account_id)
            .order_by(Subscription.deleted, Subscription.created_at.desc(), Subscription.id)
        )
    )


def invoices_of(session: Session, account_id: str, limit: int = 20) -> list[Invoice]:
    return list(
        session.scalars(
            select(Invoice)
            .where(Invoice.account_id == account_id)
            .order_by(Invoice.applied_event_created.desc(), Invoice.id.desc())
            .limit(limit)
        )
    )


def history_of(session: Session, account_id: str, limit: int | None = None) -> list[AuditEntry]:
    """The account's audit trail, newest first."""
    query = (
        select(AuditEntry)
        .where(AuditEntry.account_id == account_id)
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
    )
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def recent_events_of(session: Session, account: Account, limit: int = 20) -> list[StripeEvent]:
    """The newest events about the account or any of its customers.

    The customer ids are read first so PostgreSQL can combine the two indexes
    (`customer_id`, `account_id`) instead of scanning every event.
    """
    customer_ids = list(
        session.scalars(select(StripeCustomer.id).where(StripeCustomer.account_id == account.id))
    )
    about_account = StripeEvent.account_id == account.id
    condition = (
        or_(about_account, StripeEvent.customer_id.in_(customer_ids))
        if customer_ids
        else about_account
    )
    return list(
        session.scalars(
            select(StripeEvent)
            .where(condition)
            .order_by(StripeEvent.created.desc(), StripeEvent.received_at.desc())
            .limit(limit)
        )
    )


def subscription_document(subscription: Subscription) -> dict[str, Any]:
    return {
        "id": subscription.id,
        "status": subscription.status,
        "plan": subscription.plan,
        "price_id": subscription.price_id,
        "current_period_end": iso(subscription.current_period_end),
        "cancel_at_period_end": subscription.cancel_at_period_end,
    }


def invoice_document(invoice: Invoice) -> dict[str, Any]:
    return {
        "id": invoice.id,
        "status": invoice.status,
        "subscription_id": invoice.subscription_id,
        "amount_due": invoice.amount_due,
        "amount_paid": invoice.amount_paid,
        "amount_remaining": invoice.amount_remaining,
        "currency": invoice.currency,
        "attempt_count": invoice.attempt_count,
        "next_payment_attempt": iso(invoice.next_payment_attempt),
        "payment_failed": payment_failed(invoice),
    }


def payment_failed(invoice: Invoice) -> bool:
    """An invoice whose collection failed at least once and is not paid."""
    return invoice.status in FAILED_INVOICE_STATUSES and invoice.attempt_count > 0


def cause_document(entry: AuditEntry, event_types: dict[str, str] | None = None) -> dict[str, Any]:
    if entry.cause_event_id is not None:
        cause: dict[str, Any] = {"event_id": entry.cause_event_id}
        if event_types is not None and entry.cause_event_id in event_types:
            cause["event_type"] = event_types[entry.cause_event_id]
        return cause
    return {"ops_action": entry.cause_ops_action}


def history_entry_document(
    entry: AuditEntry, event_types: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "at": iso(entry.at),
        "plan_before": entry.plan_before,
        "plan_after": entry.plan_after,
        "quota_before": {
            "requests_per_minute": entry.requests_per_minute_before,
            "monthly_requests": entry.monthly_requests_before,
            "source": entry.quota_source_before,
        },
        "quota_after": {
            "requests_per_minute": entry.requests_per_minute_after,
            "monthly_requests": entry.monthly_requests_after,
            "source": entry.quota_source_after,
        },
        "cause": cause_document(entry, event_types),
    }


def event_types_of(session: Session, entries: list[AuditEntry]) -> dict[str, str]:
    """The type of each event named as a cause, so history reads without a second look."""
    ids = {e.cause_event_id for e in entries if e.cause_event_id}
    if not ids:
        return {}
    rows = session.execute(select(StripeEvent.id, StripeEvent.type).where(StripeEvent.id.in_(ids)))
    return {row.id: row.type for row in rows}


def history_document(session: Session, account_id: str) -> dict[str, Any]:
    entries = history_of(session, account_id)
    types = event_types_of(session, entries)
    return {
        "account_id": account_id,
        "entries": [history_entry_document(e, types) for e in entries],
    }


def account_document(session: Session, account: Account) -> dict[str, Any]:
    """The SPEC's account document, plus `plan_since`, `override`, `last_change` (the newest
    audit entry) and `plan_change` (the entry that set the current plan)."""
    customers = customers_of(session, account.id)
    current = next((c for c in customers if not c.deleted), customers[0] if customers else None)
    override = session.get(QuotaOverride, account.id)
    last = history_of(session, account.id, limit=1)
    plan_entry = newest_plan_change(session, account.id)
    types = event_types_of(session, last + ([plan_entry] if plan_entry else []))
    return {
        "account_id": account.id,
        "plan": account.plan,
        "quota": {
            "requests_per_minute": account.requests_per_minute,
            "monthly_requests": account.monthly_requests,
            "source": account.quota_source,
        },
        "stripe_customer_id": current.id if current else None,
        "email": account.email or (current.email if current else None),
        "subscriptions": [subscription_document(s) for s in subscriptions_of(session, account.id)],
        "updated_at": iso(account.updated_at),
        "plan_since": iso(account.plan_since),
        "override": (
            {
                "requests_per_minute": override.requests_per_minute,
                "monthly_requests": override.monthly_requests,
                "reason": override.reason,
                "set_by": override.set_by,
                "set_at": iso(override.set_at),
            }
            if override
            else None
        ),
        "last_change": (
            {"at": iso(last[0].at), "cause": cause_document(last[0], types)} if last else None
        ),
        "plan_change": (
            {
                "at": iso(plan_entry.at),
                "plan_before": plan_entry.plan_before,
                "cause": cause_document(plan_entry, types),
            }
            if plan_entry
            else None
        ),
    }


def newest_plan_change(session: Session, account_id: str) -> AuditEntry | None:
    """The audit entry that put the account on its current plan (None: never changed)."""
    return session.scalar(
        select(AuditEntry)
        .where(AuditEntry.account_id == account_id, AuditEntry.plan_before != AuditEntry.plan_after)
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        .limit(1)
    )


@dataclass(frozen=True)
class AccountFilter:
    """Filters of an accounts list: the account's plan, a status one of its subscriptions has."""

    plan: str | None = None
    status: str | None = None

    def __post_init__(self) -> None:
        if self.plan is not None and self.plan not in PLANS:
            raise InvalidQuery(
                "invalid_parameter", f"plan must be one of {', '.join(PLANS)}, got {self.plan!r}"
            )
        if self.status is not None and self.status not in SUBSCRIPTION_STATUSES:
            raise InvalidQuery(
                "invalid_parameter",
                f"status must be one of {', '.join(SUBSCRIPTION_STATUSES)}, got {self.status!r}",
            )


def list_accounts(
    session: Session, filters: AccountFilter, *, limit: int, cursor: str | None = None
) -> tuple[list[Account], str | None]:
    """A page of accounts ordered by id, and the cursor of the next page (or None)."""
    query = select(Account)
    if filters.plan:
        query = query.where(Account.plan == filters.plan)
    if filters.status:
        query = query.where(
            exists().where(
                Subscription.account_id == Account.id, Subscription.status == filters.status
            )
        )
    if cursor:
        (after,) = decode_cursor(cursor, 1)
        query = query.where(tuple_(Account.id) > tuple_(after))
    rows = list(session.scalars(query.order_by(Account.id).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], encode_cursor(rows[limit - 1].id)


def account_summary(account: Account) -> dict[str, Any]:
    """The short form of an account in lists."""
    return {
        "account_id": account.id,
        "plan": account.plan,
        "quota": {
            "requests_per_minute": account.requests_per_minute,
            "monthly_requests": account.monthly_requests,
            "source": account.quota_source,
        },
        "email": account.email,
        "plan_since": iso(account.plan_since),
        "updated_at": iso(account.updated_at),
    }


def search_accounts(session: Session, term: str, limit: int = 20) -> list[Account]:
    """Accounts matching an account id, a Stripe customer id or an email (exact, any case).

    Two small indexed lookups rather than one query with a subquery in an OR, which
    PostgreSQL would answer by scanning every account.
    """
    term = term.strip()
    if not term:
        return []
    linked = session.scalars(
        select(StripeCustomer.account_id).where(
            or_(StripeCustomer.id == term, func.lower(StripeCustomer.email) == term.lower())
        )
    )
    ids = {term, *linked}
    return list(
        session.scalars(
            select(Account)
            .where(or_(Account.id.in_(ids), func.lower(Account.email) == term.lower()))
            .order_by(Account.id)
            .limit(limit)
        )
    )

"""Where a subscription change becomes a quota change: an account's plan and quota.

`recompute_account` derives the plan from all of the account's subscriptions and the quota
from that plan and any ops override, and writes an audit entry naming the cause when
anything changed. Webhook handlers, ops commands and `stripe sync` all end here, so the
rules are applied one way only. Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from .plans import Quota


class AccountNotFound(LookupError):
    """No account has this id."""


class InvalidQuota(ValueError):
    """A quota override must be positive whole numbers."""


@dataclass(frozen=True)
class Cause:
    """Why an account's plan or quota changed: a Stripe event id or an ops action.

    Exactly one is set; the audit trail stores it so ops can answer "why" in one step.
    """

    event_id: str | None = None
    ops_action: str | None = None

    def __post_init__(self) -> None:
        if (self.event_id is None) == (self.ops_action is None):
            raise ValueError("A cause names either a Stripe event id or an ops action")

    @classmethod
    def event(cls, event_id: str) -> Cause:
        return cls(event_id=event_id)

    @classmethod
    def ops(cls, action: str) -> Cause:
        return cls(ops_action=action)


@dataclass(frozen=True)
class AccountState:
    """An account's effective plan and quota."""

    plan: str
    quota: Quota


_ENSURE_ACCOUNT = text("SELECT billing_ensure_account(:account_id, :email)")

# The rules (plan from subscriptions, quota from plan or override, audit on change) are
# the SQL function of migration 0004, so the webhook's direct path applies them in the
# same round trip as storing the event. It returns no row for an unknown account.
_RECOMPUTE = text(
    "SELECT * FROM billing_recompute_account(:account_id, :cause_event_id, :cause_ops_action)"
)


def ensure_account(session: Session, account_id: str, email: str | None = None) -> None:
    """Create the account on the free plan if it does not exist; fill a missing email.

    An existing email is kept: the customer's own snapshots (`customer.updated`) update it.
    """
    if not account_id:
        raise ValueError("An account id must not be empty")
    session.execute(_ENSURE_ACCOUNT, {"account_id": account_id, "email": email})


def recompute_account(session: Session, account_id: str, cause: Cause) -> AccountState:
    """Derive the account's plan and quota from its subscriptions and override.

    Called after anything that may change them (a subscription snapshot, an override set or
    cleared, a sync), so state is always recomputed from the evidence and never
    incremented; replays are harmless. Writes an audit entry naming `cause` only when the
    plan, the quota or its source changed. Holds the account's lock until the transaction
    ends. Raises `AccountNotFound`.
    """
    row: Any = session.execute(
        _RECOMPUTE,
        {
            "account_id": account_id,
            "cause_event_id": cause.event_id,
            "cause_ops_action": cause.ops_action,
        },
    ).first()
    if row is None:
        raise AccountNotFound(f"No account {account_id!r}")
    return AccountState(
        row.plan, Quota(row.requests_per_minute, row.monthly_requests, row.quota_source)
    )


# The lock `billing_recompute_account` takes (migration 0004, the same key), taken before
# an override changes so whichever recompute comes next sees it.
_LOCK_ACCOUNT = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
_ACCOUNT_EXISTS = text("SELECT 1 FROM accounts WHERE id = :account_id")


def _lock_account(session: Session, account_id: str) -> None:
    session.execute(_LOCK_ACCOUNT, {"key": f"billing-account:{account_id}"})
    if session.execute(_ACCOUNT_EXISTS, {"account_id": account_id}).first() is None:
        raise AccountNotFound(f"No account {account_id!r}")


def set_quota_override(
    session: Session,
    account_id: str,
    requests_per_minute: int,
    monthly_requests: int,
    *,
    ops_action: str,
    reason: str | None = None,
    set_by: str | None = None,
) -> AccountState:
    """Give the account a quota that wins over its plan's defaults until cleared.

    For enterprise deals and incidents. The override survives plan changes because
    `recompute_account` always applies it last. `ops_action` names the action in the audit
    trail (e.g. "quota set via CLI"); `set_by` who did it (defaults to `ops_action`).
    Raises `AccountNotFound` or `InvalidQuota`.
    """
    for name, value in (
        ("requests_per_minute", requests_per_minute),
        ("monthly_requests", monthly_requests),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidQuota(f"{name} must be a whole number of at least 1, got {value!r}")
    _lock_account(session, account_id)
    session.execute(
        text(
            """
            INSERT INTO quota_overrides
                   (account_id, requests_per_minute, monthly_requests, reason, set_by)
            VALUES (:account_id, :rpm, :monthly, :reason, :set_by)
            ON CONFLICT (account_id) DO UPDATE
               SET requests_per_minute = EXCLUDED.requests_per_minute,
                   monthly_requests = EXCLUDED.monthly_requests,
                   reason = EXCLUDED.reason, set_by = EXCLUDED.set_by, set_at = now()
            """
        ),
        {
            "account_id": account_id,
            "rpm": requests_per_minute,
            "monthly": monthly_requests,
            "reason": reason,
            "set_by": set_by or ops_action,
        },
    )
    return recompute_account(session, account_id, Cause.ops(ops_action))


def clear_quota_override(session: Session, account_id: str, *, ops_action: str) -> AccountState:
    """Remove the account's override so its plan's defaults apply again.

    Clearing an account without an override changes nothing and writes no audit entry.
    Raises `AccountNotFound`.
    """
    _lock_account(session, account_id)
    session.execute(
        text("DELETE FROM quota_overrides WHERE account_id = :account_id"),
        {"account_id": account_id},
    )
    return recompute_account(session, account_id, Cause.ops(ops_action))

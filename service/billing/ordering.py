"""Which of two snapshots of one Stripe object wins, whatever order they arrive in.

Every stored subscription, invoice and customer remembers the key of the snapshot applied
to it; a new snapshot replaces it only when its key is greater. Because the keys are
totally ordered, the stored state is the maximum of all snapshots delivered, the same for
every arrival order and any duplication (convergence).

Subscription key, compared left to right:
1. `deleted`: a subscription that has ended (`customer.subscription.deleted`, `canceled`,
   `incomplete_expired`) never comes back to life;
2. the event's `created` second: newer wins;
3. on a same-second tie between two different snapshots, `STRIPE_API_KEY` set: the
   subscription is re-fetched from the Stripe API and that answer is stored (see
   `stripe_objects`; a 404 falls back to the rule below). Without a key the
   deterministic rule continues: the status later in the lifecycle wins (`SUBSCRIPTION_PRECEDENCE`:
   incomplete < trialing < active < past_due < unpaid < paused < incomplete_expired < canceled),
4. then the greater digest of the snapshot's content (a stable, arbitrary tiebreak),
5. then the greater event id (the same content delivered as two distinct events).

Invoice key: status precedence first (draft < open < uncollectible < paid < void: an
invoice's status only moves forward), then `created`, digest, event id.
Customer key: `deleted` first, then `created`, digest, event id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

SUBSCRIPTION_PRECEDENCE: Final[Mapping[str, int]] = {
    "incomplete": 0,
    "trialing": 1,
    "active": 2,
    "past_due": 3,
    "unpaid": 4,
    "paused": 5,
    "incomplete_expired": 6,
    "canceled": 7,
}
# Statuses Stripe never leaves: the subscription is over.
TERMINAL_SUBSCRIPTION_STATUSES: Final = frozenset({"canceled", "incomplete_expired"})

INVOICE_PRECEDENCE: Final[Mapping[str, int]] = {
    "draft": 0,
    "open": 1,
    "uncollectible": 2,
    "paid": 3,
    "void": 4,
}

# A status this code does not know yet sorts below every known one.
UNKNOWN_PRECEDENCE: Final = -1


def subscription_precedence(status: str) -> int:
    """Rank of a subscription status for the same-second tie rule."""
    return SUBSCRIPTION_PRECEDENCE.get(status, UNKNOWN_PRECEDENCE)


def invoice_precedence(status: str | None) -> int:
    """Rank of an invoice status; invoice statuses only move forward."""
    return INVOICE_PRECEDENCE.get(status or "", UNKNOWN_PRECEDENCE)


def _plain(value: Any) -> Any:
    """What `json` cannot encode itself: a dataclass as its fields, anything else as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    return str(value)


def digest(fields: Any) -> str:
    """A stable digest of a snapshot's content: the same fields give the same digest.

    `fields` is a mapping or a dataclass (nested dataclasses are encoded as their fields,
    as `dataclasses.asdict` would give them, without its deep copy).
    """
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=_plain)
    return hashlib.sha256(canonical.encode()).hexdigest()


SnapshotKey = tuple[bool, int, int, str, str]


def subscription_key(
    *, deleted: bool, created: int, status: str, snapshot_digest: str, event_id: str | None
) -> SnapshotKey:
    """The subscription ordering key (module docstring), as the SQL upsert compares it."""
    return (deleted, created, subscription_precedence(status), snapshot_digest, event_id or "")

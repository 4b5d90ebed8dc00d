"""`stripe sync` and `stripe catch-up`: making the database agree with Stripe.

Sync walks every customer and subscription in the Stripe API, compares each with what the
database holds, reports the drift, and fixes it with the same billing functions the webhook
handlers call (`link_customer`, `apply_customer_snapshot`, `apply_subscription_snapshot`),
under the same per-customer advisory lock, one object per transaction so one bad object
does not undo the rest. A snapshot fetched now is newer than every event already applied,
so it wins the ordering; events created before it that arrive later lose it, correctly.

Catch-up asks the Events API for the events created since the newest one stored (Stripe
keeps 30 days) and hands each, oldest first, to `processing.receive`, exactly as if Stripe
had delivered it; ones already stored are answered `duplicate` and change nothing.

Both read Stripe through `StripeApi`, which backs off on 429.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from ..billing.accounts import Cause
from ..billing.models import StripeCustomer, Subscription
from ..billing.plans import load_catalogue, plan_for_prices
from ..billing.snapshots import parse_customer, parse_subscription
from ..billing.stripe_objects import (
    apply_customer_snapshot,
    apply_subscription_snapshot,
    customer_account,
    link_customer,
)
from ..db import transaction
from ..stripe_api import StripeApi
from ..stripe_webhooks.models import StripeEvent
from ..stripe_webhooks.payload import PayloadError, event_from_payload
from ..stripe_webhooks.processing import ProcessingContext, lock_customer, receive

log = logging.getLogger(__name__)

SYNC_ACTION = "stripe sync"
# Seconds of overlap when catching up: `created` has one-second resolution, so events of
# the newest stored second may not all have arrived; re-reading them costs a `duplicate`.
CATCH_UP_OVERLAP = 1

Progress = Callable[[str], None]


@dataclass
class SyncReport:
    """What a sync found and did; `drift` lines say what differed between Stripe and us."""

    customers: int = 0
    subscriptions: int = 0
    drift: list[str] = field(default_factory=list)
    # Objects whose drift was fixed (or, in a dry run, would have been).
    fixed: int = 0
    unlinked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    only_in_database: list[str] = field(default_factory=list)


def _noop(_: str) -> None:
    return None


def sync(
    engine: Engine,
    api: StripeApi,
    plan_price_map: Mapping[str, str],
    *,
    fix: bool = True,
    progress: Progress = _noop,
) -> SyncReport:
    """Compare every Stripe customer and subscription with the database; fix the drift."""
    report = SyncReport()
    for customer in api.list_customers():
        report.customers += 1
        progress("customer")
        work = functools.partial(_sync_customer, customer=customer, report=report)
        _one(engine, fix, report, str(customer.get("id", "?")), work)
    seen: set[str] = set()
    for subscription in api.list_subscriptions(status="all"):
        report.subscriptions += 1
        seen.add(str(subscription.get("id", "")))
        progress("subscription")
        work = functools.partial(
            _sync_subscription,
            subscription=subscription,
            plan_price_map=plan_price_map,
            report=report,
        )
        _one(engine, fix, report, str(subscription.get("id", "?")), work)
    with transaction(engine) as session:
        live = session.scalars(select(Subscription.id).where(Subscription.deleted.is_(False)))
        report.only_in_database = sorted(set(live) - seen)
    for sub_id in report.only_in_database:
        report.drift.append(f"{sub_id}: in the database but not in Stripe (left as is)")
    return report


def _one(
    engine: Engine,
    fix: bool,
    report: SyncReport,
    object_id: str,
    work: Callable[[Session], bool],
) -> None:
    """Run one object's comparison and fix in its own transaction (rolled back on --dry-run)."""
    try:
        with Session(engine, expire_on_commit=False) as session:
            session.begin()
            changed = work(session)
            if fix:
                session.commit()
            else:
                session.rollback()
            if changed:
                report.fixed += 1
    except OperationalError:
        raise
    except Exception as exc:
        report.errors.append(f"{object_id}: {type(exc).__name__}: {exc}")
        log.warning("stripe.sync.object_failed", extra={"object_id": object_id, "error": str(exc)})


def _sync_customer(session: Session, customer: dict[str, Any], report: SyncReport) -> bool:
    snap = parse_customer(customer)
    lock_customer(session, snap.id)
    account_id = customer_account(session, snap.id)
    hint = (customer.get("metadata") or {}).get("account_id")
    changed = False
    if account_id is None:
        if not isinstance(hint, str) or not hint or snap.deleted:
            report.unlinked.append(f"{snap.id}: no account (no metadata.account_id)")
            return False
        link_customer(session, snap.id, hint, email=snap.email)
        report.drift.append(f"{snap.id}: not linked; linked to account {hint}")
        account_id = hint
        changed = True
    stored = session.get(StripeCustomer, snap.id)
    if stored is not None and (stored.email != snap.email or stored.deleted != snap.deleted):
        report.drift.append(
            f"{snap.id}: email {stored.email!r} -> {snap.email!r}"
            if stored.email != snap.email
            else f"{snap.id}: deleted {stored.deleted} -> {snap.deleted}"
        )
        changed = True
    apply_customer_snapshot(
        session, customer, created=int(time.time()), cause=Cause.ops(SYNC_ACTION)
    )
    return changed


def _sync_subscription(
    session: Session,
    subscription: dict[str, Any],
    plan_price_map: Mapping[str, str],
    report: SyncReport,
) -> bool:
    snap = parse_subscription(subscription)
    lock_customer(session, snap.customer_id)
    stored = session.get(Subscription, snap.id)
    # Read before applying: the billing code writes with SQL the session does not track.
    ours = (
        (stored.status, stored.plan, stored.price_id, stored.cancel_at_period_end, stored.deleted)
        if stored is not None
        else None
    )
    plan, price_id = plan_for_prices(snap.prices, plan_price_map, load_catalogue(session))
    stripe_side = (snap.status, plan, price_id, snap.cancel_at_period_end, snap.ended())
    result = apply_subscription_snapshot(
        session,
        subscription,
        created=int(time.time()),
        cause=Cause.ops(SYNC_ACTION),
        plan_price_map=plan_price_map,
    )
    if result.account_id is None:
        report.unlinked.append(f"{snap.id}: customer {snap.customer_id} is linked to no account")
        return False
    if ours is None:
        report.drift.append(f"{snap.id}: missing in the database ({snap.status}, {plan})")
        return True
    if ours == stripe_side:
        return False
    names = ("status", "plan", "price", "cancel_at_period_end", "ended")
    differences = ", ".join(
        f"{name} {a} -> {b}" for name, a, b in zip(names, ours, stripe_side, strict=True) if a != b
    )
    report.drift.append(f"{snap.id}: {differences}")
    return True


@dataclass
class CatchUpReport:
    """What catch-up fetched and what became of each event."""

    since: int | None
    fetched: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


def newest_stored_created(engine: Engine) -> int | None:
    """Unix time of the newest stored event's `created`, or None with no events."""
    with transaction(engine) as session:
        newest = session.scalar(select(func.max(StripeEvent.created)))
    return int(newest.timestamp()) if newest is not None else None


def catch_up(
    engine: Engine,
    api: StripeApi,
    context: ProcessingContext,
    *,
    since: int | None = None,
    progress: Progress = _noop,
) -> CatchUpReport:
    """Fetch events created since `since` (default: the newest stored) and receive them."""
    if since is None:
        newest = newest_stored_created(engine)
        since = newest - CATCH_UP_OVERLAP if newest is not None else None
    report = CatchUpReport(since=since)
    fetched = list(api.list_events(created_gt=since))
    report.fetched = len(fetched)
    # Stripe lists newest first; apply oldest first, as they happened.
    for payload in sorted(fetched, key=lambda e: (e.get("created", 0), e.get("id", ""))):
        progress("event")
        try:
            event = event_from_payload(payload)
        except PayloadError as exc:
            report.errors.append(f"{payload.get('id')}: {exc}")
            continue
        with transaction(engine) as session:
            status = receive(session, event, json.dumps(payload), context)
        report.outcomes[status] += 1
        log.info("stripe.catch_up.event", extra={"event_id": event.id, "status": status})
    return report


def summarize(counts: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{n} {name}" for name, n in counts) or "nothing"

"""The ops commands of the `webhooks` CLI: accounts, events, quota and stripe.

Each command owns its transaction (the CLI is an edge, like a view), prints readable
tables with rich, and takes `--json` where a script may want the document instead; the
JSON is the same document the ops API answers with.
"""

from __future__ import annotations

import json
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext
from rich.console import Console
from rich.progress import TaskID
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ..db import transaction
from ..stripe_webhooks.models import EVENT_STATUSES
from ..stripe_webhooks.processing import ProcessingContext
from ..stripe_webhooks.signature import sign_header
from . import accounts, events
from .pagination import MAX_LIMIT, InvalidQuery
from .replay import EventNotFound, ReplayResult, dry_run, failed_event_ids, replay
from .samples import SAMPLE_TYPES, sample_event

if TYPE_CHECKING:
    from ..stripe_api import StripeApi

log = logging.getLogger(__name__)


def console() -> Console:
    """A console on the current stdout; wide when not a terminal, so ids never wrap."""
    if sys.stdout.isatty():
        return Console()
    return Console(file=sys.stdout, width=200, no_color=True, highlight=False)


def _engine() -> Engine:
    engine: Engine = current_app.extensions["engine"]
    return engine


def _context() -> ProcessingContext:
    context: ProcessingContext = current_app.extensions["processing_context"]
    return context


@contextmanager
def rolled_back(engine: Engine) -> Iterator[Session]:
    """A transaction that is always rolled back: for dry runs."""
    with Session(engine) as session:
        session.begin()
        try:
            yield session
        finally:
            session.rollback()


def _echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=False))


def _quota_text(quota: dict[str, Any]) -> str:
    return f"{quota['requests_per_minute']:,} req/min · {quota['monthly_requests']:,} req/month"


def _cause_text(cause: dict[str, Any]) -> str:
    if cause.get("event_id"):
        kind = f" ({cause['event_type']})" if cause.get("event_type") else ""
        return f"Stripe event {cause['event_id']}{kind}"
    return f"ops: {cause.get('ops_action')}"


def _when(value: str | None) -> str:
    return value.replace("T", " ")[:19] if value else "—"


# -- accounts ------------------------------------------------------------------------


accounts_group = AppGroup("accounts", help="Read accounts: plan, quota, why and since when.")


@accounts_group.command("show")
@click.argument("account_id")
@click.option("--json", "as_json", is_flag=True, help="Print the document as JSON.")
def accounts_show(account_id: str, as_json: bool) -> None:
    """Plan, quota and its source, subscriptions, invoices, recent events and audit trail.

    ACCOUNT_ID may also be a Stripe customer id (cus_...).
    """
    with transaction(_engine()) as session:
        account = accounts.get_account(session, account_id)
        if account is None:
            account = accounts.account_for_customer(session, account_id)
        if account is None:
            raise click.ClickException(f"No account or customer {account_id!r}")
        document = accounts.account_document(session, account)
        history = accounts.history_document(session, account.id)["entries"]
        invoices = [accounts.invoice_document(i) for i in accounts.invoices_of(session, account.id)]
        recent = [events.event_document(e) for e in accounts.recent_events_of(session, account)]
    if as_json:
        _echo_json({**document, "invoices": invoices, "recent_events": recent, "history": history})
        return
    _print_account(document, history, invoices, recent)


def _print_account(
    document: dict[str, Any],
    history: list[dict[str, Any]],
    invoices: list[dict[str, Any]],
    recent: list[dict[str, Any]],
) -> None:
    out = console()
    quota = document["quota"]
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("Account", document["account_id"])
    summary.add_row("Email", document["email"] or "—")
    summary.add_row("Customer", document["stripe_customer_id"] or "not linked")
    summary.add_row("Plan", f"{document['plan']} (since {_when(document['plan_since'])})")
    plan_change = document["plan_change"]
    summary.add_row(
        "Plan set by",
        f"{_cause_text(plan_change['cause'])}, from {plan_change['plan_before']}"
        if plan_change
        else "no change since the account was created",
    )
    if quota["source"] == "override" and document["override"]:
        override = document["override"]
        source = f"ops override, set by {override['set_by']} at {_when(override['set_at'])}" + (
            f": {override['reason']}" if override["reason"] else ""
        )
    else:
        source = f"the {document['plan']} plan's defaults"
    summary.add_row("Quota", f"{_quota_text(quota)}  (source: {quota['source']})")
    summary.add_row("Quota from", source)
    last = document["last_change"]
    summary.add_row(
        "Last change",
        f"{_when(last['at'])} by {_cause_text(last['cause'])}" if last else "none recorded",
    )
    out.print(summary)

    subs = Table(title="Subscriptions", title_justify="left")
    for column in ("id", "status", "plan", "price", "period ends", "cancel at period end"):
        subs.add_column(column)
    for s in document["subscriptions"]:
        subs.add_row(
            s["id"],
            s["status"],
            s["plan"],
            s["price_id"] or "—",
            _when(s["current_period_end"]),
            "yes" if s["cancel_at_period_end"] else "no",
        )
    _print_table(out, subs, document["subscriptions"])

    inv = Table(title="Invoices", title_justify="left")
    for column in ("id", "status", "due", "paid", "attempts", "next attempt"):
        inv.add_column(column)
    for i in invoices:
        status = i["status"] or "—"
        inv.add_row(
            i["id"],
            f"{status} PAYMENT FAILED" if i["payment_failed"] else status,
            str(i["amount_due"]),
            str(i["amount_paid"]),
            str(i["attempt_count"]),
            _when(i["next_payment_attempt"]),
            style="red" if i["payment_failed"] else None,
        )
    _print_table(out, inv, invoices)

    ev = Table(title="Recent events", title_justify="left")
    for column in ("created", "type", "status", "id", "attempts", "last error"):
        ev.add_column(column)
    for e in recent:
        ev.add_row(
            _when(e["created"]),
            e["type"],
            e["status"],
            e["id"],
            str(e["attempts"]),
            e["last_error"] or "",
            style="red" if e["status"] in events.FAILED_STATUSES else None,
        )
    _print_table(out, ev, recent)

    audit = Table(title="Audit trail (newest first)", title_justify="left")
    for column in ("at", "plan", "quota", "source", "cause"):
        audit.add_column(column)
    for h in history:
        audit.add_row(
            _when(h["at"]),
            f"{h['plan_before']} -> {h['plan_after']}",
            f"{_quota_text(h['quota_before'])} -> {_quota_text(h['quota_after'])}",
            f"{h['quota_before']['source']} -> {h['quota_after']['source']}",
            _cause_text(h["cause"]),
        )
    _print_table(out, audit, history)


def _print_table(out: Console, table: Table, rows: list[dict[str, Any]]) -> None:
    if rows:
        out.print(table)
    else:
        out.print(f"{table.title}: none")


@accounts_group.command("list")
@click.option("--plan", type=click.Choice(accounts.PLANS), help="Only accounts on this plan.")
@click.option(
    "--status",
    type=click.Choice(accounts.SUBSCRIPTION_STATUSES),
    help="Only accounts with a subscription in this status.",
)
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=50, show_default=True)
@click.option("--cursor", help="Continue after a previous page (printed at its end).")
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON.")
def accounts_list(
    plan: str | None, status: str | None, limit: int, cursor: str | None, as_json: bool
) -> None:
    """Accounts ordered by id, with their plan and quota."""
    try:
        with transaction(_engine()) as session:
            rows, next_cursor = accounts.list_accounts(
                session,
                accounts.AccountFilter(plan=plan, status=status),
                limit=limit,
                cursor=cursor,
            )
            documents = [accounts.account_summary(a) for a in rows]
    except InvalidQuery as exc:
        raise click.BadParameter(exc.message) from None
    if as_json:
        _echo_json({"accounts": documents, "next_cursor": next_cursor})
        return
    table = Table()
    for column in ("account", "email", "plan", "quota", "source", "plan since"):
        table.add_column(column)
    for a in documents:
        table.add_row(
            a["account_id"],
            a["email"] or "—",
            a["plan"],
            _quota_text(a["quota"]),
            a["quota"]["source"],
            _when(a["plan_since"]),
        )
    out = console()
    out.print(table)
    out.print(f"{len(documents)} account(s)")
    if next_cursor:
        out.print(f"more: --cursor {next_cursor}")


# -- events --------------------------------------------------------------------------


events_group = AppGroup("events", help="Stored Stripe events: list, show, replay.")


@events_group.command("list")
@click.option("--status", type=click.Choice(EVENT_STATUSES))
@click.option("--type", "event_type", help="Only events of this type.")
@click.option("--customer", help="Only events of this Stripe customer (cus_...).")
@click.option("--account", help="Only events applied to this account.")
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=50, show_default=True)
@click.option("--cursor", help="Continue after a previous page (printed at its end).")
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON.")
def events_list(
    status: str | None,
    event_type: str | None,
    customer: str | None,
    account: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Events, newest received first."""
    try:
        filters = events.EventFilter(
            status=status, type=event_type, customer_id=customer, account_id=account
        )
        with transaction(_engine()) as session:
            rows, next_cursor = events.list_events(session, filters, limit=limit, cursor=cursor)
            documents = [events.event_document(e) for e in rows]
    except InvalidQuery as exc:
        raise click.BadParameter(exc.message) from None
    if as_json:
        _echo_json({"events": documents, "next_cursor": next_cursor})
        return
    table = Table()
    for column in ("received", "id", "type", "status", "customer", "account", "attempts", "error"):
        table.add_column(column)
    for e in documents:
        table.add_row(
            _when(e["received_at"]),
            e["id"],
            e["type"],
            e["status"],
            e["customer_id"] or "—",
            e["account_id"] or "—",
            str(e["attempts"]),
            e["last_error"] or "",
            style="red" if e["status"] in events.FAILED_STATUSES else None,
        )
    out = console()
    out.print(table)
    out.print(f"{len(documents)} event(s)")
    if next_cursor:
        out.print(f"more: --cursor {next_cursor}")


@events_group.command("show")
@click.argument("event_id")
@click.option("--payload", is_flag=True, help="Print the stored payload too.")
@click.option("--json", "as_json", is_flag=True, help="Print the document as JSON.")
def events_show(event_id: str, payload: bool, as_json: bool) -> None:
    """One stored event: status, attempts, last error, customer and account."""
    with transaction(_engine()) as session:
        found = events.get_event(session, event_id)
        if found is None:
            raise click.ClickException(f"No event {event_id!r}")
        document = events.event_document(found)
        body = found.payload
    if as_json:
        _echo_json({**document, "payload": body} if payload else document)
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in document.items():
        table.add_row(key, "—" if value is None else str(value))
    out = console()
    out.print(table)
    if payload:
        click.echo(json.dumps(body, indent=2))


@events_group.command("replay")
@click.argument("event_id", required=False)
@click.option("--failed", "all_failed", is_flag=True, help="Replay every failed or dead event.")
@click.option(
    "--dry-run", is_flag=True, help="Show the change a replay would make, then roll it back."
)
@click.option("--limit", type=click.IntRange(1), help="With --failed: at most this many.")
def events_replay(event_id: str | None, all_failed: bool, dry_run: bool, limit: int | None) -> None:
    """Process stored events again through the same code path as a delivery.

    Harmless for an event already applied. Exits 1 when a replayed event is still failing.
    """
    if bool(event_id) == all_failed:
        raise click.UsageError("Give an EVENT_ID or --failed (not both)")
    if all_failed:
        with transaction(_engine()) as session:
            ids = failed_event_ids(session, limit)
        if not ids:
            click.echo("No failed events.")
            return
    else:
        assert event_id is not None
        ids = [event_id]
    still_failing = 0
    for one in ids:
        try:
            result = _dry_run_one(one) if dry_run else _replay_one(one)
        except EventNotFound:
            raise click.ClickException(f"No event {one!r}") from None
        _print_replay(result, dry_run)
        if result.status_after in events.FAILED_STATUSES:
            still_failing += 1
    if len(ids) > 1:
        verb = "would leave" if dry_run else "left"
        click.echo(f"{len(ids)} event(s) replayed; {verb} {still_failing} failing.")
    if still_failing and not dry_run:
        sys.exit(1)


def _replay_one(event_id: str) -> ReplayResult:
    with transaction(_engine()) as session:
        result = replay(session, event_id, _context())
    log.info(
        "ops.event.replayed",
        extra={"event_id": event_id, "status": result.status_after, "via": "cli"},
    )
    return result


def _dry_run_one(event_id: str) -> ReplayResult:
    with rolled_back(_engine()) as session:
        return dry_run(session, event_id, _context())


def _print_replay(result: ReplayResult, dry_run: bool) -> None:
    account = f" (account {result.account_id})" if result.account_id else ""
    prefix = "[dry run] " if dry_run else ""
    verb = "would go" if dry_run else "went"
    click.echo(
        f"{prefix}{result.event_id}: {verb} {result.status_before} -> {result.status_after}"
        f"{account}"
    )
    if result.error and result.status_after in events.FAILED_STATUSES:
        click.echo(f"  error: {result.error}")
    if dry_run:
        if not result.changes:
            click.echo("  no change to the account")
        for path, before, after in result.changes:
            click.echo(f"  {path}: {_show(before)} -> {_show(after)}")


def _show(value: Any) -> str:
    return "—" if value is None else str(value)


# -- quota ---------------------------------------------------------------------------


quota_group = AppGroup("quota", help="Per-account quota overrides (enterprise deals, incidents).")


def _operator() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "ops"


@quota_group.command("set")
@click.argument("account_id")
@click.option("--rpm", type=click.IntRange(1), required=True, help="Requests per minute.")
@click.option("--monthly", type=click.IntRange(1), required=True, help="Requests per month.")
@click.option("--reason", help="Why (kept with the override and in the audit trail).")
@click.option("--by", "set_by", default=_operator, show_default="the current user")
def quota_set(account_id: str, rpm: int, monthly: int, reason: str | None, set_by: str) -> None:
    """Override the account's quota; it wins over the plan's defaults until cleared."""
    from ..billing.accounts import AccountNotFound, InvalidQuota, set_quota_override

    action = f"quota set by {set_by}" + (f": {reason}" if reason else "")
    try:
        with transaction(_engine()) as session:
            before = _state(session, account_id)
            state = set_quota_override(
                session, account_id, rpm, monthly, ops_action=action, reason=reason, set_by=set_by
            )
    except AccountNotFound:
        raise click.ClickException(f"No account {account_id!r}") from None
    except InvalidQuota as exc:
        raise click.BadParameter(str(exc)) from None
    log.info("ops.quota.set", extra={"account_id": account_id, "set_by": set_by, "via": "cli"})
    click.echo(
        f"{account_id}: quota {before} -> "
        f"{state.quota.requests_per_minute:,} req/min · {state.quota.monthly_requests:,} req/month "
        f"[source: {state.quota.source}] (plan {state.plan})"
    )


@quota_group.command("clear")
@click.argument("account_id")
@click.option("--by", "set_by", default=_operator, show_default="the current user")
def quota_clear(account_id: str, set_by: str) -> None:
    """Remove the account's override: its plan's defaults apply again."""
    from ..billing.accounts import AccountNotFound, clear_quota_override

    try:
        with transaction(_engine()) as session:
            before = _state(session, account_id)
            state = clear_quota_override(
                session, account_id, ops_action=f"quota override cleared by {set_by}"
            )
    except AccountNotFound:
        raise click.ClickException(f"No account {account_id!r}") from None
    log.info("ops.quota.cleared", extra={"account_id": account_id, "set_by": set_by, "via": "cli"})
    click.echo(
        f"{account_id}: quota {before} -> "
        f"{state.quota.requests_per_minute:,} req/min · {state.quota.monthly_requests:,} req/month "
        f"[source: {state.quota.source}] (plan {state.plan})"
    )


def _state(session: Session, account_id: str) -> str:
    account = accounts.get_account(session, account_id)
    if account is None:
        return "—"
    return (
        f"{account.requests_per_minute:,} req/min · {account.monthly_requests:,} req/month "
        f"[source: {account.quota_source}]"
    )


# -- stripe --------------------------------------------------------------------------


@click.group("stripe")
def stripe_group() -> None:
    """Talk to Stripe: send a signed test event, sync from the API, catch up on events."""


@stripe_group.command("send-test-event")
@click.argument("event_type", type=click.Choice(SAMPLE_TYPES))
@click.option(
    "--url",
    default="http://127.0.0.1:8000/webhooks/stripe",
    show_default=True,
    help="The receiver's webhook endpoint.",
)
@click.option(
    "--secret",
    envvar="STRIPE_WEBHOOK_SECRET",
    help="Signing secret (default: STRIPE_WEBHOOK_SECRET; the first of several).",
)
@click.option("--customer", help="Stripe customer id to put in the sample (default: a new one).")
@click.option("--account", help="Account id to put in the sample (default: a new one).")
@click.option("--timeout", type=float, default=10.0, show_default=True)
def send_test_event(
    event_type: str,
    url: str,
    secret: str | None,
    customer: str | None,
    account: str | None,
    timeout: float,
) -> None:
    """Sign a realistic sample event and POST it to a running receiver.

    Checks a deployment end to end: signature, storage and the answer Stripe would get.
    Exits 1 unless the receiver answers 2xx.
    """
    import time

    secret = (secret or "").split(",")[0].strip()
    if not secret:
        raise click.UsageError("Set STRIPE_WEBHOOK_SECRET or pass --secret")
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter("must be an http:// or https:// URL", param_hint="--url")
    event = sample_event(event_type, customer=customer, account=account)
    body = json.dumps(event).encode()
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": sign_header(body, secret, int(time.time())),
            "User-Agent": "webhooks-send-test-event",
        },
    )
    click.echo(f"POST {url}  {event_type}  {event['id']}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (checked)
            status, answer = response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        status, answer = exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"Could not reach {url}: {exc}") from None
    click.echo(f"{status} {answer.strip()}")
    if not 200 <= status < 300:
        sys.exit(1)


def _stripe_api(page_size: int) -> StripeApi:
    from ..stripe_api import StripeApi

    settings = current_app.config["SETTINGS"]
    if not settings.stripe_api_key:
        raise click.UsageError("STRIPE_API_KEY is not set: sync and catch-up read the Stripe API")
    return StripeApi(settings.stripe_api_key, settings.stripe_api_base, page_size=page_size)


@contextmanager
def _progress(description: str) -> Iterator[Callable[[str], None]]:
    """A live counter while Stripe's lists are walked (their length is not known upfront)."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} read"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    tasks: dict[str, TaskID] = {}
    with progress:

        def advance(kind: str) -> None:
            if kind not in tasks:
                tasks[kind] = progress.add_task(f"{description}: {kind}s", total=None)
            progress.advance(tasks[kind])

        yield advance


@stripe_group.command("sync")
@click.option("--dry-run", is_flag=True, help="Report the drift without fixing it.")
@click.option(
    "--page-size", type=click.IntRange(1, 100), default=100, show_default=True, hidden=True
)
@with_appcontext
def stripe_sync(dry_run: bool, page_size: int) -> None:
    """Backfill and reconcile customers and subscriptions from the Stripe API.

    Reports every difference between Stripe and the database and fixes it through the same
    code path as the webhooks (unless --dry-run). Backs off when Stripe answers 429.
    Exits 1 when some objects could not be applied.
    """
    from ..stripe_api import StripeApiError
    from .stripe_sync import sync

    settings = current_app.config["SETTINGS"]
    api = _stripe_api(page_size)
    try:
        with _progress("Syncing from Stripe") as advance:
            report = sync(
                _engine(), api, settings.plan_price_map, fix=not dry_run, progress=advance
            )
    except StripeApiError as exc:
        raise click.ClickException(str(exc)) from None
    for line in report.drift:
        click.echo(f"drift  {line}")
    for line in report.unlinked:
        click.echo(f"unlinked  {line}")
    for line in report.errors:
        click.echo(f"error  {line}")
    fixed = "would fix" if dry_run else "fixed"
    click.echo(
        f"Synced {report.customers} customer(s) and {report.subscriptions} subscription(s): "
        f"{len(report.drift)} drift(s), {fixed} {report.fixed}, "
        f"{len(report.unlinked)} unlinked, {len(report.errors)} error(s)."
    )
    if report.errors:
        sys.exit(1)


@stripe_group.command("catch-up")
@click.option(
    "--since",
    type=int,
    help="Unix time to fetch events after (default: the newest stored event's).",
)
@click.option(
    "--page-size", type=click.IntRange(1, 100), default=100, show_default=True, hidden=True
)
@with_appcontext
def stripe_catch_up(since: int | None, page_size: int) -> None:
    """Fetch events missed since the newest stored one (Events API, 30 days) and process them.

    Each goes through the same path as a delivery; events already stored are duplicates.
    """
    from ..stripe_api import StripeApiError
    from .stripe_sync import catch_up, summarize

    api = _stripe_api(page_size)
    try:
        with _progress("Catching up") as advance:
            report = catch_up(_engine(), api, _context(), since=since, progress=advance)
    except StripeApiError as exc:
        raise click.ClickException(str(exc)) from None
    window = (
        f"since {datetime.fromtimestamp(report.since, UTC).isoformat()}"
        if report.since is not None
        else "in the last 30 days"
    )
    for line in report.errors:
        click.echo(f"error  {line}")
    click.echo(
        f"Fetched {report.fetched} event(s) {window}: {summarize(sorted(report.outcomes.items()))}."
    )
    if report.errors or report.outcomes.get("failed") or report.outcomes.get("dead"):
        sys.exit(1)


def register_commands(group: click.Group) -> None:
    """Add the ops command groups to the `webhooks` CLI."""
    group.add_command(accounts_group)
    group.add_command(events_group)
    group.add_command(quota_group)
    group.add_command(stripe_group)

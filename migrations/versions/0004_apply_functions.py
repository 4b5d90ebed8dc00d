"""apply functions: the billing writes as SQL functions, and receiving in one round trip

Each function is the only implementation of its rule; the Python appliers call them, and
the webhook's direct path calls `stripe_receive_event`, which stores an event and applies
it in one statement (one round trip, one transaction):

- `billing_recompute_account`: an account's plan from its subscriptions, its quota from
  that plan or an ops override, and an audit entry when either changed;
- `billing_apply_subscription`, `billing_apply_invoice`, `billing_apply_customer`: store a
  snapshot when it wins the ordering (see `service/billing/ordering.py`);
- `stripe_receive_event`: take the customer's lock, store the event, apply it.

Snapshots arrive as one `jsonb` argument whose keys are the column names (times as Unix
seconds), so adding a field changes no signature. Revision ID: 0004, revises 0003.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECOMPUTE_ACCOUNT = """
CREATE FUNCTION billing_recompute_account(
    p_account_id text, p_cause_event_id text, p_cause_ops_action text
) RETURNS TABLE (plan text, requests_per_minute integer, monthly_requests bigint,
                 quota_source text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    cur record;
    best record;
    ops_override record;
    new_rpm integer;
    new_monthly bigint;
    new_source text;
BEGIN
    -- The account row, locked so concurrent recomputes of one account queue up.
    SELECT a.plan, a.requests_per_minute, a.monthly_requests, a.quota_source INTO cur
      FROM accounts a WHERE a.id = p_account_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;  -- no row: the caller says which account is missing
    END IF;
    -- Separate statements on purpose: each takes a new snapshot, so the evidence read here
    -- includes every change committed while this call waited for the lock above.
    -- The plan: the highest-ranked one among subscriptions that grant access, else free.
    -- Granting statuses: `GRANTING_STATUSES` in service/billing/plans.py.
    SELECT p.name, p.requests_per_minute, p.monthly_requests INTO best
      FROM plans p
     WHERE p.name = 'free'
        OR p.name IN (SELECT s.plan FROM subscriptions s
                       WHERE s.account_id = p_account_id AND NOT s.deleted
                         AND s.status IN ('active', 'trialing', 'past_due'))
     ORDER BY p.rank DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'The plans table has no free plan: run `webhooks db upgrade`';
    END IF;
    -- The quota: an ops override wins over the plan's defaults.
    SELECT o.requests_per_minute, o.monthly_requests INTO ops_override
      FROM quota_overrides o WHERE o.account_id = p_account_id;
    IF FOUND THEN
        new_rpm := ops_override.requests_per_minute;
        new_monthly := ops_override.monthly_requests;
        new_source := 'override';
    ELSE
        new_rpm := best.requests_per_minute;
        new_monthly := best.monthly_requests;
        new_source := 'plan';
    END IF;
    IF (best.name, new_rpm, new_monthly, new_source)
       IS DISTINCT FROM (cur.plan, cur.requests_per_minute, cur.monthly_requests,
                         cur.quota_source) THEN
        UPDATE accounts a
           SET plan = best.name, requests_per_minute = new_rpm,
               monthly_requests = new_monthly, quota_source = new_source, updated_at = now(),
               plan_since = CASE WHEN a.plan = best.name THEN a.plan_since ELSE now() END
         WHERE a.id = p_account_id;
        INSERT INTO audit_log (account_id, plan_before, plan_after,
                               requests_per_minute_before, requests_per_minute_after,
                               monthly_requests_before, monthly_requests_after,
                               quota_source_before, quota_source_after,
                               cause_event_id, cause_ops_action)
        VALUES (p_account_id, cur.plan, best.name, cur.requests_per_minute, new_rpm,
                cur.monthly_requests, new_monthly, cur.quota_source, new_source,
                p_cause_event_id, p_cause_ops_action);
    END IF;
    RETURN QUERY SELECT best.name, new_rpm, new_monthly, new_source;
END
$$
"""

# `p_defer_on_tie`: on a same-second tie with a different snapshot, store by the
# deterministic rule but leave the account alone and say `tie`: the caller re-fetches the
# subscription from Stripe and calls again with `p_force` (see billing/stripe_objects.py).
APPLY_SUBSCRIPTION = """
CREATE FUNCTION billing_apply_subscription(p jsonb, p_force boolean, p_defer_on_tie boolean)
RETURNS TABLE (account_id text, applied boolean, tie boolean, old_account_id text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r record;
    snapshot_created timestamptz := to_timestamp((p->>'created')::bigint);
BEGIN
    WITH link AS (
        SELECT c.account_id FROM stripe_customers c WHERE c.id = p->>'customer_id'
    ), old AS (
        SELECT s.account_id, s.applied_event_created, s.applied_event_id, s.snapshot_digest
          FROM subscriptions s WHERE s.id = p->>'id' FOR UPDATE
    ), up AS (
        INSERT INTO subscriptions AS s
               (id, customer_id, account_id, status, price_id, plan,
                current_period_start, current_period_end, cancel_at_period_end, cancel_at,
                canceled_at, ended_at, trial_start, trial_end, deleted,
                status_precedence, snapshot_digest, applied_event_id, applied_event_created)
        SELECT p->>'id', p->>'customer_id', link.account_id, p->>'status', p->>'price_id',
               p->>'plan',
               to_timestamp((p->>'current_period_start')::bigint),
               to_timestamp((p->>'current_period_end')::bigint),
               (p->>'cancel_at_period_end')::boolean,
               to_timestamp((p->>'cancel_at')::bigint),
               to_timestamp((p->>'canceled_at')::bigint),
               to_timestamp((p->>'ended_at')::bigint),
               to_timestamp((p->>'trial_start')::bigint),
               to_timestamp((p->>'trial_end')::bigint),
               (p->>'deleted')::boolean, (p->>'status_precedence')::smallint,
               p->>'snapshot_digest', p->>'event_id', snapshot_created
          FROM link
        ON CONFLICT (id) DO UPDATE
           SET customer_id = EXCLUDED.customer_id, account_id = EXCLUDED.account_id,
               status = EXCLUDED.status, price_id = EXCLUDED.price_id, plan = EXCLUDED.plan,
               current_period_start = EXCLUDED.current_period_start,
               current_period_end = EXCLUDED.current_period_end,
               cancel_at_period_end = EXCLUDED.cancel_at_period_end,
               cancel_at = EXCLUDED.cancel_at, canceled_at = EXCLUDED.canceled_at,
               ended_at = EXCLUDED.ended_at, trial_start = EXCLUDED.trial_start,
               trial_end = EXCLUDED.trial_end, deleted = EXCLUDED.deleted,
               status_precedence = EXCLUDED.status_precedence,
               snapshot_digest = EXCLUDED.snapshot_digest,
               applied_event_id = EXCLUDED.applied_event_id,
               applied_event_created = EXCLUDED.applied_event_created,
               updated_at = now()
         WHERE (p_force AND (NOT s.deleted OR EXCLUDED.deleted))
            OR (EXCLUDED.deleted, EXCLUDED.applied_event_created, EXCLUDED.status_precedence,
                EXCLUDED.snapshot_digest, coalesce(EXCLUDED.applied_event_id, ''))
             > (s.deleted, s.applied_event_created, s.status_precedence,
                s.snapshot_digest, coalesce(s.applied_event_id, ''))
        RETURNING s.id
    )
    SELECT (SELECT link.account_id FROM link) AS account_id,
           EXISTS (SELECT 1 FROM up) AS applied,
           old.account_id AS old_account_id, old.applied_event_created AS old_created,
           old.applied_event_id AS old_event_id, old.snapshot_digest AS old_digest
      INTO r
      FROM (SELECT 1) AS one LEFT JOIN old ON true;
    account_id := r.account_id;
    applied := r.applied;
    old_account_id := r.old_account_id;
    -- Two different snapshots of one second: only Stripe knows which came last.
    tie := r.old_created IS NOT NULL AND r.old_created = snapshot_created
           AND r.old_event_id IS DISTINCT FROM p->>'event_id'
           AND r.old_digest IS DISTINCT FROM p->>'snapshot_digest';
    IF r.account_id IS NULL OR NOT r.applied OR (tie AND p_defer_on_tie) THEN
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM billing_recompute_account(r.account_id, p->>'event_id', p->>'ops_action');
    IF r.old_account_id IS NOT NULL AND r.old_account_id <> r.account_id THEN
        PERFORM billing_recompute_account(r.old_account_id, p->>'event_id', p->>'ops_action');
    END IF;
    RETURN NEXT;
END
$$
"""

APPLY_INVOICE = """
CREATE FUNCTION billing_apply_invoice(p jsonb)
RETURNS TABLE (account_id text, applied boolean)
LANGUAGE sql AS $$
    WITH link AS (
        SELECT c.account_id FROM stripe_customers c WHERE c.id = p->>'customer_id'
    ), up AS (
    INSERT INTO invoices AS i
           (id, customer_id, account_id, subscription_id, status, amount_due, amount_paid,
            amount_remaining, currency, attempt_count, next_payment_attempt,
            hosted_invoice_url, billing_reason, status_precedence, snapshot_digest,
            applied_event_id, applied_event_created)
    SELECT p->>'id', p->>'customer_id', link.account_id, p->>'subscription_id',
           p->>'status', (p->>'amount_due')::bigint, (p->>'amount_paid')::bigint,
           (p->>'amount_remaining')::bigint, p->>'currency', (p->>'attempt_count')::integer,
           to_timestamp((p->>'next_payment_attempt')::bigint), p->>'hosted_invoice_url',
           p->>'billing_reason', (p->>'status_precedence')::smallint,
           p->>'snapshot_digest', p->>'event_id', to_timestamp((p->>'created')::bigint)
      FROM link
    ON CONFLICT (id) DO UPDATE
       SET customer_id = EXCLUDED.customer_id, account_id = EXCLUDED.account_id,
           subscription_id = coalesce(EXCLUDED.subscription_id, i.subscription_id),
           status = EXCLUDED.status, amount_due = EXCLUDED.amount_due,
           amount_paid = EXCLUDED.amount_paid, amount_remaining = EXCLUDED.amount_remaining,
           currency = EXCLUDED.currency, attempt_count = EXCLUDED.attempt_count,
           next_payment_attempt = EXCLUDED.next_payment_attempt,
           hosted_invoice_url = EXCLUDED.hosted_invoice_url,
           billing_reason = EXCLUDED.billing_reason,
           status_precedence = EXCLUDED.status_precedence,
           snapshot_digest = EXCLUDED.snapshot_digest,
           applied_event_id = EXCLUDED.applied_event_id,
           applied_event_created = EXCLUDED.applied_event_created,
           updated_at = now()
     WHERE (EXCLUDED.status_precedence, EXCLUDED.applied_event_created,
            EXCLUDED.snapshot_digest, coalesce(EXCLUDED.applied_event_id, ''))
         > (i.status_precedence, i.applied_event_created, i.snapshot_digest,
            coalesce(i.applied_event_id, ''))
    RETURNING i.id
    )
    SELECT (SELECT link.account_id FROM link), EXISTS (SELECT 1 FROM up)
$$
"""

# The customer's email and name; the account's email follows. A deleted customer stays
# deleted (the ordering key starts with `deleted`).
APPLY_CUSTOMER = """
CREATE FUNCTION billing_apply_customer(p jsonb)
RETURNS TABLE (account_id text, applied boolean)
LANGUAGE sql AS $$
    WITH link AS (
        SELECT c.account_id FROM stripe_customers c WHERE c.id = p->>'id'
    ), c AS (
        UPDATE stripe_customers AS c
           SET email = p->>'email', name = p->>'name', deleted = (p->>'deleted')::boolean,
               applied_event_id = p->>'event_id',
               applied_event_created = to_timestamp((p->>'created')::bigint),
               snapshot_digest = p->>'snapshot_digest', updated_at = now()
         WHERE c.id = p->>'id'
           AND ((p->>'deleted')::boolean, to_timestamp((p->>'created')::bigint),
                p->>'snapshot_digest', coalesce(p->>'event_id', ''))
             > (c.deleted, coalesce(c.applied_event_created, '-infinity'),
                coalesce(c.snapshot_digest, ''), coalesce(c.applied_event_id, ''))
        RETURNING c.account_id
    ), a AS (
        UPDATE accounts SET email = p->>'email'
          FROM c
         WHERE accounts.id = c.account_id AND p->>'email' IS NOT NULL
           AND accounts.email IS DISTINCT FROM p->>'email'
    )
    SELECT (SELECT link.account_id FROM link), EXISTS (SELECT 1 FROM c)
$$
"""

# SQLSTATE WH001: the event needs the full path in Python (its customer is not linked, it
# was stored before but never settled, or a tie needs Stripe's answer); the statement
# rolls back, so nothing of it is stored.
RECEIVE_EVENT = """
CREATE FUNCTION stripe_receive_event(
    p_event jsonb, p_payload text, p_kind text, p_snapshot jsonb, p_defer_on_tie boolean
) RETURNS TABLE (status text, account_id text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    customer text := p_event->>'customer_id';
    linked text;
    stored text;
    result record;
BEGIN
    IF customer IS NULL THEN
        RAISE EXCEPTION 'The event has no customer' USING ERRCODE = 'WH001';
    END IF;
    -- The lock order of service/stripe_webhooks/processing.py: the customer, then rows.
    PERFORM pg_advisory_xact_lock(hashtextextended('stripe-customer:' || customer, 0));
    SELECT c.account_id INTO linked FROM stripe_customers c WHERE c.id = customer;
    IF linked IS NULL THEN
        RAISE EXCEPTION 'Customer % is not linked', customer USING ERRCODE = 'WH001';
    END IF;
    INSERT INTO stripe_events (id, type, created, livemode, api_version, payload,
                               customer_id, status, attempts, processed_at, account_id)
    VALUES (p_event->>'id', p_event->>'type', to_timestamp((p_event->>'created')::bigint),
            (p_event->>'livemode')::boolean, p_event->>'api_version', p_payload::jsonb,
            customer, 'processed', 1, now(), linked)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT e.status INTO stored FROM stripe_events e WHERE e.id = p_event->>'id'
           FOR UPDATE;
        IF stored IN ('processed', 'ignored') THEN
            RETURN QUERY SELECT 'duplicate'::text, linked;
            RETURN;
        END IF;
        RAISE EXCEPTION 'Event % is stored but not settled', p_event->>'id'
              USING ERRCODE = 'WH001';
    END IF;
    IF p_kind = 'subscription' THEN
        SELECT * INTO result FROM billing_apply_subscription(p_snapshot, false, p_defer_on_tie);
        IF result.tie AND p_defer_on_tie THEN
            RAISE EXCEPTION 'A same-second tie needs Stripe''s answer' USING ERRCODE = 'WH001';
        END IF;
    ELSIF p_kind = 'invoice' THEN
        PERFORM billing_apply_invoice(p_snapshot);
    ELSIF p_kind = 'customer' THEN
        PERFORM billing_apply_customer(p_snapshot);
    ELSE
        RAISE EXCEPTION 'Unknown snapshot kind %', p_kind;
    END IF;
    RETURN QUERY SELECT 'processed'::text, linked;
END
$$
"""

FUNCTIONS = {
    "billing_recompute_account(text, text, text)": RECOMPUTE_ACCOUNT,
    "billing_apply_subscription(jsonb, boolean, boolean)": APPLY_SUBSCRIPTION,
    "billing_apply_invoice(jsonb)": APPLY_INVOICE,
    "billing_apply_customer(jsonb)": APPLY_CUSTOMER,
    "stripe_receive_event(jsonb, text, text, jsonb, boolean)": RECEIVE_EVENT,
}


def upgrade() -> None:
    for body in FUNCTIONS.values():
        op.execute(body)


def downgrade() -> None:
    for signature in reversed(FUNCTIONS):
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")

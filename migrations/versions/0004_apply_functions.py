"""apply functions: the billing writes as SQL functions, and receiving in one round trip

Each function is the only implementation of its rule; the Python appliers call them, and
the webhook's direct path calls `stripe_receive_event`, which stores an event and applies
it in one statement (one round trip, one transaction):

- `billing_grants`: the plan a subscription in a given state grants, if any;
- `billing_recompute_account`: an account's plan from its subscriptions, its quota from
  that plan or an ops override, and an audit entry when either changed;
- `billing_ensure_account`, `billing_link_customer`: an account, and a Stripe customer's
  link to it (a checkout, a subscription's `metadata.account_id`);
- `billing_apply_subscription`, `billing_apply_invoice`, `billing_apply_customer`: store a
  snapshot when it wins the ordering (see `service/billing/ordering.py`);
- `stripe_receive_event`: take the customer's lock, store the event, apply it.

Snapshots arrive as one `jsonb` argument whose keys are the column names (times as Unix
seconds), so adding a field changes no signature.

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

# The plan a subscription in this state grants its account, if any: the one definition
# of which statuses grant access (`GRANTING_STATUSES` in service/billing/plans.py is held
# to it by a test). `cancel_at_period_end` keeps a subscription `active` until deleted.
GRANTS = """
CREATE FUNCTION billing_grants(p_status text, p_plan text, p_deleted boolean) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN NOT p_deleted AND p_status IN ('active', 'trialing', 'past_due')
                THEN p_plan END
$$
"""

RECOMPUTE_ACCOUNT = """
CREATE FUNCTION billing_recompute_account(
    p_account_id text, p_cause_event_id text, p_cause_ops_action text
) RETURNS TABLE (plan text, requests_per_minute integer, monthly_requests bigint,
                 quota_source text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    cur record;
    fresh record;
BEGIN
    -- The account's lock, so concurrent recomputes of one account (its customers' events,
    -- ops) queue up; an advisory lock, so a foreign-key check on the account row, or a
    -- change of its email, is not blocked by it. Lock order: customer, account, rows.
    PERFORM pg_advisory_xact_lock(hashtextextended('billing-account:' || p_account_id, 0));
    -- A separate statement on purpose: it takes a new snapshot, so what it and the
    -- statements below read includes every change committed while this call waited.
    SELECT a.plan, a.requests_per_minute, a.monthly_requests, a.quota_source INTO cur
      FROM accounts a WHERE a.id = p_account_id;
    IF NOT FOUND THEN
        RETURN;  -- no row: the caller says which account is missing
    END IF;
    -- The plan: the highest-ranked one its subscriptions grant, else free. The quota: an
    -- ops override wins over the plan's defaults.
    SELECT p.name AS plan,
           coalesce(o.requests_per_minute, p.requests_per_minute) AS requests_per_minute,
           coalesce(o.monthly_requests, p.monthly_requests) AS monthly_requests,
           CASE WHEN o.account_id IS NULL THEN 'plan' ELSE 'override' END AS quota_source
      INTO fresh
      FROM plans p LEFT JOIN quota_overrides o ON o.account_id = p_account_id
     WHERE p.name = 'free'
        OR p.name IN (SELECT billing_grants(s.status, s.plan, s.deleted)
                        FROM subscriptions s WHERE s.account_id = p_account_id)
     ORDER BY p.rank DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'The plans table has no free plan: run `webhooks db upgrade`';
    END IF;
    IF (fresh.plan, fresh.requests_per_minute, fresh.monthly_requests, fresh.quota_source)
       IS DISTINCT FROM (cur.plan, cur.requests_per_minute, cur.monthly_requests,
                         cur.quota_source) THEN
        WITH changed AS (
            UPDATE accounts a
               SET plan = fresh.plan, requests_per_minute = fresh.requests_per_minute,
                   monthly_requests = fresh.monthly_requests, quota_source = fresh.quota_source,
                   updated_at = now(),
                   plan_since = CASE WHEN a.plan = fresh.plan THEN a.plan_since ELSE now() END
             WHERE a.id = p_account_id
            RETURNING a.id
        )
        INSERT INTO audit_log (account_id, plan_before, plan_after,
                               requests_per_minute_before, requests_per_minute_after,
                               monthly_requests_before, monthly_requests_after,
                               quota_source_before, quota_source_after,
                               cause_event_id, cause_ops_action)
        SELECT changed.id, cur.plan, fresh.plan, cur.requests_per_minute,
               fresh.requests_per_minute, cur.monthly_requests, fresh.monthly_requests,
               cur.quota_source, fresh.quota_source, p_cause_event_id, p_cause_ops_action
          FROM changed;
    END IF;
    RETURN QUERY SELECT fresh.plan, fresh.requests_per_minute, fresh.monthly_requests,
                        fresh.quota_source;
END
$$
"""

ENSURE_ACCOUNT = """
CREATE FUNCTION billing_ensure_account(p_account_id text, p_email text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- A new account starts on free; an existing email is kept (customer snapshots update it).
    INSERT INTO accounts (id, email, plan, requests_per_minute, monthly_requests)
    SELECT p_account_id, p_email, p.name, p.requests_per_minute, p.monthly_requests
      FROM plans p WHERE p.name = 'free'
    ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email
     WHERE accounts.email IS NULL AND EXCLUDED.email IS NOT NULL;
END
$$
"""

# A customer stays linked to its first account: `account_id` says which, `created` whether
# this call made the link.
LINK_CUSTOMER = """
CREATE FUNCTION billing_link_customer(p_customer_id text, p_account_id text, p_email text)
RETURNS TABLE (account_id text, created boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    SELECT c.account_id INTO account_id FROM stripe_customers c WHERE c.id = p_customer_id;
    IF FOUND THEN
        created := false;
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM billing_ensure_account(p_account_id, p_email);
    INSERT INTO stripe_customers AS c (id, account_id, email)
    VALUES (p_customer_id, p_account_id, p_email)
    ON CONFLICT (id) DO UPDATE SET account_id = c.account_id
    RETURNING c.account_id, (c.xmax = 0) INTO account_id, created;
    RETURN NEXT;
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
        SELECT s.account_id, s.applied_event_created, s.applied_event_id, s.snapshot_digest,
               billing_grants(s.status, s.plan, s.deleted) AS grants
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
           old.applied_event_id AS old_event_id, old.snapshot_digest AS old_digest,
           old.grants AS old_grants
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
    -- The account's plan depends only on what each subscription grants: a change that
    -- grants the same (active -> past_due, a new period) needs no recompute.
    IF r.old_account_id IS NOT DISTINCT FROM r.account_id
       AND r.old_grants IS NOT DISTINCT FROM billing_grants(
               p->>'status', p->>'plan', (p->>'deleted')::boolean) THEN
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
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
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
    SELECT (SELECT link.account_id FROM link), EXISTS (SELECT 1 FROM up);
END
$$
"""

# The customer's email and name; the account's email follows. A deleted customer stays
# deleted (the ordering key starts with `deleted`).
APPLY_CUSTOMER = """
CREATE FUNCTION billing_apply_customer(p jsonb)
RETURNS TABLE (account_id text, applied boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
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
    SELECT (SELECT link.account_id FROM link), EXISTS (SELECT 1 FROM c);
END
$$
"""

# SQLSTATE WH001: the event needs the full path in Python (its customer is not linked, it
# was stored before but never settled, a tie needs Stripe's answer, a checkout's link
# conflicts or has events waiting for it); the statement rolls back, so nothing of it is
# stored.
RECEIVE_EVENT = """
CREATE FUNCTION stripe_receive_event(
    p_id text, p_type text, p_created bigint, p_livemode boolean, p_api_version text,
    p_customer_id text, p_payload jsonb, p_kind text, p_snapshot jsonb,
    p_defer_on_tie boolean
) RETURNS TABLE (status text, account_id text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    customer text := p_customer_id;
    linked text;
    stored text;
    result record;
BEGIN
    IF customer IS NULL THEN
        RAISE EXCEPTION 'The event has no customer' USING ERRCODE = 'WH001';
    END IF;
    -- The lock order of service/stripe_webhooks/processing.py: the customer, then rows.
    PERFORM pg_advisory_xact_lock(hashtextextended('stripe-customer:' || customer, 0));
    IF p_kind = 'checkout' THEN
        -- The link is what a checkout applies. A conflicting link is logged, and events
        -- that waited for this link are applied, by the full path.
        SELECT * INTO result
          FROM billing_link_customer(customer, p_snapshot->>'account_id', p_snapshot->>'email');
        IF result.account_id <> p_snapshot->>'account_id'
           OR (result.created AND EXISTS (
                   SELECT 1 FROM stripe_events e
                    WHERE e.customer_id = customer AND e.status = 'pending')) THEN
            RAISE EXCEPTION 'The link of customer % needs the full path', customer
                  USING ERRCODE = 'WH001';
        END IF;
    END IF;
    SELECT c.account_id INTO linked FROM stripe_customers c WHERE c.id = customer;
    IF linked IS NULL THEN
        RAISE EXCEPTION 'Customer % is not linked', customer USING ERRCODE = 'WH001';
    END IF;
    INSERT INTO stripe_events (id, type, created, livemode, api_version, payload,
                               customer_id, status, attempts, processed_at, account_id)
    VALUES (p_id, p_type, to_timestamp(p_created), p_livemode, p_api_version, p_payload,
            customer, 'processed', 1, now(), linked)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT e.status INTO stored FROM stripe_events e WHERE e.id = p_id FOR UPDATE;
        IF stored IN ('processed', 'ignored') THEN
            RETURN QUERY SELECT 'duplicate'::text, linked;
            RETURN;
        END IF;
        RAISE EXCEPTION 'Event % is stored but not settled', p_id USING ERRCODE = 'WH001';
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
    ELSIF p_kind <> 'checkout' THEN
        RAISE EXCEPTION 'Unknown snapshot kind %', p_kind;
    END IF;
    RETURN QUERY SELECT 'processed'::text, linked;
END
$$
"""

FUNCTIONS = {
    "billing_grants(text, text, boolean)": GRANTS,
    "billing_recompute_account(text, text, text)": RECOMPUTE_ACCOUNT,
    "billing_ensure_account(text, text)": ENSURE_ACCOUNT,
    "billing_link_customer(text, text, text)": LINK_CUSTOMER,
    "billing_apply_subscription(jsonb, boolean, boolean)": APPLY_SUBSCRIPTION,
    "billing_apply_invoice(jsonb)": APPLY_INVOICE,
    "billing_apply_customer(jsonb)": APPLY_CUSTOMER,
    "stripe_receive_event(text, text, bigint, boolean, text, text, jsonb, text, jsonb, boolean)": (
        RECEIVE_EVENT
    ),
}


def upgrade() -> None:
    for body in FUNCTIONS.values():
        op.execute(body)


def downgrade() -> None:
    for signature in reversed(FUNCTIONS):
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")

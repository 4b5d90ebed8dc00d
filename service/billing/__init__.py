"""Billing domain: plans, quotas, accounts and their Stripe objects. No Flask, no HTTP.

Stripe snapshots become rows in `models`; `accounts` turns an account's subscriptions and
any ops override into its plan and quota, writing the audit trail; `stripe_objects`
applies subscription, invoice, customer and checkout snapshots in an order-proof way.
"""

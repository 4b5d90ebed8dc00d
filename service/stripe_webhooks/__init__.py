"""Stripe webhooks: verify, store, dispatch."""

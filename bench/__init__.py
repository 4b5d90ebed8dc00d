"""Benchmark (`make bench`) and reliability suite (`make chaos`) for the webhook receiver.

Both start the real service under gunicorn on a throwaway PostgreSQL database and drive it
from a separate load process over loopback only, with really signed Stripe events.
"""

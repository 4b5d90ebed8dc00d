"""The reliability suite (`make chaos`): faults under load, and what survived them.

Every scenario runs the real service under gunicorn against a PostgreSQL instance the
suite starts itself under ./var/chaos-postgres (never a shared server), drives it with
signed events from a separate load process, injects one fault, re-delivers what was not
answered 200 (as Stripe would), and reports figures: events sent, accepted, stored,
applied, lost, applied twice.
"""

"""gunicorn settings for `webhooks serve` and the Procfile (`-c python:service.gunicorn_conf`)."""

from __future__ import annotations

import multiprocessing
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
# Stripe waits up to 10 s for an answer; a worker stuck longer than that is replaced.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
accesslog = None

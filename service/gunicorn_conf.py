"""gunicorn settings for `webhooks serve` and the Procfile (`-c python:service.gunicorn_conf`)."""

from __future__ import annotations

import multiprocessing
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
# One sync worker per core, plus one: while a worker waits for PostgreSQL (one statement
# per event on the direct path), the extra one keeps the cores busy. More workers than
# that only contend: idle sync workers all wake for every new connection. Two cores, the
# database on the same machine, concurrency 16 (bench/, 2 rounds of 15 s each, one run per
# setting): 2 workers 666 events/s, 3 workers 912/s, 4 workers 882/s, 5 workers 717/s.
# With a distant database each worker waits longer per event: raise WEB_CONCURRENCY there.
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() + 1))
# Stripe waits up to 10 s for an answer; a worker stuck longer than that is replaced.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
accesslog = None
# Each worker touches a heartbeat file per request; in memory it cannot stall on a slow
# or full disk (which makes the master think the worker hung), as gunicorn advises.
_SHM = "/dev/shm"  # noqa: S108 - gunicorn creates its own unlinked file in it, mode 0600
if os.path.isdir(_SHM):
    worker_tmp_dir = _SHM

# Prometheus: every worker writes its samples under PROMETHEUS_MULTIPROC_DIR and /metrics
# adds them up, so a scrape sees the whole service rather than whichever worker answered.
# It must be set before prometheus_client is first imported, which happens in the workers.
_created_metrics_dir: str | None = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    _created_metrics_dir = tempfile.mkdtemp(prefix="webhooks-prometheus-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _created_metrics_dir


def on_starting(server: object) -> None:
    """Start from an empty metrics directory: files of a previous run would add up."""
    import glob

    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for path in glob.glob(os.path.join(directory, "*.db")):
        os.remove(path)


def child_exit(server: object, worker: object) -> None:
    """Drop the live gauges of a worker that exited; its counters keep counting."""
    from prometheus_client import multiprocess

    # prometheus_client's multiprocess helpers are untyped; gunicorn passes its Worker.
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined,no-untyped-call]


def on_exit(server: object) -> None:
    """Remove the metrics directory this configuration created (not one it was given)."""
    if _created_metrics_dir is not None:
        import shutil

        shutil.rmtree(_created_metrics_dir, ignore_errors=True)

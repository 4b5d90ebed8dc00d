"""`python -m bench.health`: how many requests per second `/health` answers under gunicorn,
and how many database queries that load caused.

A monitor polling every second from several places must not load the database: with
HEALTH_CACHE_SECONDS each worker process checks at most once per interval, however many
requests arrive. This runs the real service (`service:create_app()`, the service's own
gunicorn settings) on a throwaway database, drives `/health` over 127.0.0.1 only with
`wrk` (or, without it, a Python keep-alive loop) for a fixed time, and counts queries two
ways: the statements the service's engines sent (a counter per worker, kept in files) and
the transactions PostgreSQL recorded for the database (`pg_stat_database`).

Not part of `make test`. Options: --seconds (10), --connections (16), --threads (2),
--workers (WEB_CONCURRENCY, else 2), --cache-seconds (HEALTH_CACHE_SECONDS, else 2).
Database: BENCH_DATABASE_URL or DATABASE_URL, else the embedded server under ./var/.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url

from .pg import ROOT, server_url, throwaway_database
from .server import Gunicorn

COUNT_DIR_ENV = "BENCH_HEALTH_COUNT_DIR"
# pg_stat_database is fed by each backend at most every 10 s while it sits idle
# (PGSTAT_IDLE_INTERVAL), so the figures are read after that long a pause.
STATS_SETTLE_SECONDS = 12.0


def instrumented_app() -> Any:
    """The service, with every statement its engines send counted in a file per worker."""
    from service import create_app

    app = create_app()
    directory = Path(os.environ[COUNT_DIR_ENV])
    lock = threading.Lock()
    count = 0

    def seen(*args: Any) -> None:
        nonlocal count
        with lock:
            count += 1
            (directory / f"{os.getpid()}.count").write_text(str(count))

    for engine in (app.extensions["engine"], app.extensions["health"].engine):
        event.listen(engine, "before_cursor_execute", seen)
    return app


def counted_statements(directory: Path) -> int:
    return sum(int(path.read_text() or 0) for path in directory.glob("*.count"))


def transactions(database_url: str) -> int:
    """Transactions PostgreSQL recorded for the database: each autocommit statement is
    one (a health check is one statement in one round trip), autovacuum's count too.

    One statement on a fresh connection, so a reading adds exactly one transaction,
    which shows in the next reading once this connection has closed.
    """
    import psycopg

    conninfo = make_url(database_url).set(drivername="postgresql")
    with psycopg.connect(conninfo.render_as_string(hide_password=False), autocommit=True) as c:
        row = c.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def run_wrk(url: str, seconds: int, connections: int, threads: int) -> tuple[float, int, str]:
    """Requests per second, non-2xx answers, and wrk's own report."""
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    rate = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", result.stdout)
    if rate is None:
        raise RuntimeError(f"could not read wrk's report:\n{result.stdout}")
    return float(rate.group(1)), int(non_2xx.group(1)) if non_2xx else 0, result.stdout


def run_python_loop(port: int, seconds: int, connections: int) -> tuple[float, int, str]:
    """The fallback load generator: `connections` threads, each a keep-alive client."""
    deadline = time.monotonic() + seconds
    done = [0] * connections
    bad = [0] * connections

    def drive(n: int) -> None:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < deadline:
            try:
                client.request("GET", "/health")
                response = client.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                client.close()
                client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                bad[n] += 1
                continue
            done[n] += 1
            if response.status != 200:
                bad[n] += 1
        client.close()

    started = time.monotonic()
    workers = [threading.Thread(target=drive, args=(n,)) for n in range(connections)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed = time.monotonic() - started
    return sum(done) / elapsed, sum(bad), f"python loop: {sum(done)} requests in {elapsed:.1f}s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", 2)))
    parser.add_argument(
        "--cache-seconds", type=float, default=float(os.environ.get("HEALTH_CACHE_SECONDS", 2))
    )
    args = parser.parse_args()

    count_dir = Path(tempfile.mkdtemp(prefix="bench-health-"))
    base = server_url()
    server_kind = make_url(base).host or "embedded (Unix socket)"
    with throwaway_database(base, prefix="webhooks_bench_health") as database_url:
        server = Gunicorn(
            "bench.health:instrumented_app()",
            database_url,
            log=ROOT / "bench" / "out" / "health.gunicorn.log",
            env={
                "WEB_CONCURRENCY": str(args.workers),
                "HEALTH_CACHE_SECONDS": str(args.cache_seconds),
                COUNT_DIR_ENV: str(count_dir),
            },
        )
        server.start()
        try:
            health_url = f"http://127.0.0.1:{server.port}/health"
            for _ in range(args.workers * 4):  # every worker connects before the baseline
                with urllib.request.urlopen(health_url, timeout=5) as response:
                    response.read()
            time.sleep(STATS_SETTLE_SECONDS)
            statements_before = counted_statements(count_dir)
            transactions_before = transactions(database_url)

            if shutil.which("wrk"):
                generator = f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s"
                rate, non_2xx, report = run_wrk(
                    health_url, args.seconds, args.connections, args.threads
                )
            else:
                generator = f"python keep-alive loop, {args.connections} connections"
                rate, non_2xx, report = run_python_loop(server.port, args.seconds, args.connections)

            time.sleep(STATS_SETTLE_SECONDS)
            statements = counted_statements(count_dir) - statements_before
            # The first reading is itself one transaction.
            queries = transactions(database_url) - transactions_before - 1
        finally:
            server.stop()
    shutil.rmtree(count_dir, ignore_errors=True)

    requests = round(rate * args.seconds)
    expected = (
        args.workers * (args.seconds / args.cache_seconds + 1) if args.cache_seconds else None
    )
    print(report.rstrip())
    print()
    print(f"load generator        {generator} on 127.0.0.1 ({args.workers} gunicorn workers)")
    print(f"database server       {server_kind}; HEALTH_CACHE_SECONDS={args.cache_seconds:g}")
    print(f"/health requests/s    {rate:,.0f}  (about {requests:,} requests, {non_2xx} not 2xx)")
    print(f"statements sent       {statements}  (counted in the service's engines)")
    print(f"database transactions {queries}  (pg_stat_database: this database, autovacuum too)")
    if expected is not None:
        print(f"upper bound expected  {expected:.0f}  (workers x (seconds / interval + 1))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

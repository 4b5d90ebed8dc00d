"""`make bench-sql`: the database's share of an event, without HTTP or Python around it.

`make bench` measures the whole service on a shared, noisy machine, where a change of a
few percent in the SQL functions is lost. This isolates the database:

1. builds the `make bench` workload (bench/events.py: links, then the mixed phase with
   its duplicates) and turns each event into the arguments the webhook's direct path
   passes to `stripe_receive_event` (`direct.receive_arguments`);
2. on a fresh database, calls the function with the link phase's arguments, then with
   the mixed phase's from BENCH_SQL_CONNECTIONS connections at once (one per gunicorn
   worker; each customer's events stay on one connection, in order);
3. on the same connections, runs the ceiling's statement (bench/ceiling.py) over the same
   payloads.

Prints, per round and target, events per second and, per event, the CPU time of those
PostgreSQL backends and the WAL written. An event the function refuses (SQLSTATE WH001,
which the webhook hands to the full path) is counted and shown; there should be none.

Environment: BENCH_DATABASE_URL or DATABASE_URL (default: the embedded server),
BENCH_SQL_EVENTS (6000 mixed events), BENCH_CUSTOMERS (500), BENCH_SQL_CONNECTIONS (3),
BENCH_ROUNDS (3), BENCH_SQL_EXTRA (a file of SQL run on each fresh database after its
migrations, to weigh a change before writing its migration).
"""

from __future__ import annotations

import itertools
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from service.config import Settings, parse_plan_price_map
from service.stripe_webhooks.direct import FULL_PATH_SQLSTATE, RECEIVE_SQL, receive_arguments
from service.stripe_webhooks.payload import parse_event
from service.stripe_webhooks.processing import ProcessingContext

from . import ceiling
from .events import PLAN_PRICE_MAP, SECRET, Workload
from .pg import server_url, throwaway_database
from .run import env_int, process_cpu

Arguments = tuple[Any, ...]
Call = Callable[[psycopg.Connection[Any], Arguments], None]


@dataclass
class Measured:
    target: str
    events: int
    seconds: float
    backend_cpu: float  # seconds, all connections
    wal_bytes: int
    refused: int = 0

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.backend_cpu / self.events * 1e6

    @property
    def wal_per_event(self) -> float:
        return self.wal_bytes / self.events


def build_arguments(
    database_url: str, customers: int, events: int
) -> tuple[list[Arguments], list[Arguments]]:
    """The direct path's arguments for the link phase and for the mixed phase."""
    workload = Workload("sql", customers)
    link = workload.link_all()
    mixed = list(itertools.islice(workload.mixed(), events))
    settings = Settings(
        stripe_webhook_secrets=(SECRET,), plan_price_map=parse_plan_price_map(PLAN_PRICE_MAP)
    )
    context = ProcessingContext(settings=settings)
    engine = create_engine(database_url, poolclass=NullPool)  # the plan catalogue
    try:
        converted: list[list[Arguments]] = []
        for phase in (link, mixed):
            arguments: list[Arguments] = []
            for _, body in phase:
                event, raw_json = parse_event(body)
                call = receive_arguments(engine, event, raw_json, context)
                if call is None:
                    raise SystemExit(f"{event.type} {event.id} has no direct path arguments")
                arguments.append(call)
            converted.append(arguments)
    finally:
        engine.dispose()
    return converted[0], converted[1]


def _receive(connection: psycopg.Connection[Any], arguments: Arguments) -> None:
    connection.execute(RECEIVE_SQL, arguments).fetchone()


def _ceiling(connection: psycopg.Connection[Any], arguments: Arguments) -> None:
    connection.execute(ceiling.INSERT, (arguments[0], arguments[6]))


def _replay(
    target: str, connections: list[psycopg.Connection[Any]], mixed: list[Arguments], call: Call
) -> Measured:
    """Run `call` over `mixed` from every connection at once, each customer on one."""
    streams: list[list[Arguments]] = [[] for _ in connections]
    for arguments in mixed:
        streams[hash(arguments[5]) % len(connections)].append(arguments)
    backends = [c.info.backend_pid for c in connections]
    refused = [0] * len(connections)

    def run(n: int) -> None:
        for arguments in streams[n]:
            try:
                call(connections[n], arguments)
            except psycopg.Error as exc:
                if exc.sqlstate != FULL_PATH_SQLSTATE:
                    raise
                refused[n] += 1

    wal_start = _wal_position(connections[0])
    cpu_start = sum(process_cpu(pid) for pid in backends)
    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(connections))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    cpu = sum(process_cpu(pid) for pid in backends) - cpu_start
    wal = _wal_bytes_since(connections[0], wal_start)
    return Measured(target, len(mixed), seconds, cpu, wal, sum(refused))


def _wal_position(connection: psycopg.Connection[Any]) -> str:
    row = connection.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def _wal_bytes_since(connection: psycopg.Connection[Any], start: str) -> int:
    row = connection.execute("SELECT pg_current_wal_insert_lsn() - %s::pg_lsn", (start,)).fetchone()
    assert row is not None
    return int(row[0])


def one_round(
    base_url: str, link: list[Arguments], mixed: list[Arguments], connections: int, extra: str
) -> list[Measured]:
    with throwaway_database(base_url, prefix="webhooks_bench_sql") as url:
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        opened = [psycopg.connect(dsn, autocommit=True) for _ in range(connections)]
        try:
            first = opened[0]
            if extra:
                first.execute(extra)
            first.execute(ceiling.SCHEMA)
            for arguments in link:
                _receive(first, arguments)
            return [
                _replay("service", opened, mixed, _receive),
                _replay("ceiling", opened, mixed, _ceiling),
            ]
        finally:
            for connection in opened:
                connection.close()


def main() -> int:
    base_url = server_url()
    customers = env_int("BENCH_CUSTOMERS", 500)
    events = env_int("BENCH_SQL_EVENTS", 6000)
    connections = env_int("BENCH_SQL_CONNECTIONS", 3)
    rounds = env_int("BENCH_ROUNDS", 3)
    extra_path = os.environ.get("BENCH_SQL_EXTRA")
    extra = Path(extra_path).read_text() if extra_path else ""

    print(f"building {events} events for {customers} customers ...", flush=True)
    with throwaway_database(base_url, prefix="webhooks_bench_sql") as url:
        link, mixed = build_arguments(url, customers, events)
    print(
        f"{len(mixed)} calls per round from {connections} connections"
        + (f", after {extra_path}" if extra else ""),
        flush=True,
    )
    print(f"{'round':>5}  {'target':8} {'events/s':>9} {'CPU us/event':>13} {'WAL B/event':>12}")
    results: dict[str, list[Measured]] = {"service": [], "ceiling": []}
    for n in range(1, rounds + 1):
        for measured in one_round(base_url, link, mixed, connections, extra):
            results[measured.target].append(measured)
            refused = f"  ({measured.refused} refused)" if measured.refused else ""
            print(
                f"{n:>5}  {measured.target:8} {measured.rate:>9.0f} {measured.cpu_us:>13.0f}"
                f" {measured.wal_per_event:>12.0f}{refused}",
                flush=True,
            )
    service = statistics.median(m.cpu_us for m in results["service"])
    ceiling = statistics.median(m.cpu_us for m in results["ceiling"])
    print(
        f"median backend CPU per event: service {service:.0f} us, ceiling {ceiling:.0f} us"
        f" ({service / ceiling:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

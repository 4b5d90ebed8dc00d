"""`make bench`: the full service against the ceiling of this machine, side by side.

One run, one throwaway database: the ceiling and the floor (bench/ceiling.py), the
service on an empty database, then the service again with BENCH_GROWTH_EVENTS (default
1,000,000) events already stored. Each target gets the same gunicorn settings and the
same traffic from a separate load process at BENCH_CONCURRENCY (16) for BENCH_SECONDS, in
BENCH_ROUNDS rounds that alternate the targets, so a busy neighbour on a shared machine
weighs on all of them alike. Prints a table,
checks the targets, and writes bench/RESULTS.md. BENCH_MEMORY_EVENTS=200000 adds a long
run that samples every worker's RSS (the memory check). Exit status 1 when a target is
missed, so a regression cannot pass unnoticed.

Environment: BENCH_DATABASE_URL or DATABASE_URL (a server to create the throwaway
database on; default the embedded server under ./var/bench-postgres), BENCH_SECONDS (20),
BENCH_ROUNDS (3), BENCH_WARMUP (3), BENCH_CUSTOMERS (1000), BENCH_CONCURRENCY (16),
BENCH_GROWTH_EVENTS (1000000; 0 skips), BENCH_MEMORY_EVENTS (0 skips), WEB_CONCURRENCY,
BENCH_PROFILE (a target name: sample its workers with py-spy), BENCH_PROFILE_RATE (100).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from .ceiling import FLOOR_TABLE
from .ceiling import TABLE as CEILING_TABLE
from .pg import ROOT, server_url, throwaway_database
from .server import CEILING_APP, FLOOR_APP, SERVICE_APP, Gunicorn

OUT = ROOT / "bench" / "out"
RESULTS = ROOT / "bench" / "RESULTS.md"


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


@dataclass
class Result:
    name: str
    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    sent_ids: int = 0
    accepted: int = 0
    stored: int = 0
    applied: int | None = None
    audit: int | None = None
    stored_statuses: dict[str, int] = field(default_factory=dict)
    rss_start: dict[int, float] = field(default_factory=dict)
    rss_end: dict[int, float] = field(default_factory=dict)
    rss_samples: list[tuple[float, dict[int, float]]] = field(default_factory=list)
    cpu_web: float = 0.0  # CPU seconds of the web workers during the measured window
    cpu_db: float = 0.0  # CPU seconds of this database's PostgreSQL backends, same window

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def cpu_per_event(self, side: str) -> float:
        """CPU milliseconds per answered request, in the web workers or in PostgreSQL."""
        seconds = self.cpu_web if side == "web" else self.cpu_db
        return 1000 * seconds / self.requests if self.requests else 0.0

    @property
    def missing(self) -> int:
        return self.accepted - self.stored


def _read_records(path: Path) -> list[list[Any]]:
    with path.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def run_target(
    name: str,
    app: str,
    database_url: str,
    *,
    customers: int,
    seconds: float | None,
    warmup: float,
    concurrency: int,
    max_events: int | None = None,
    sample_every: float = 1.0,
) -> Result:
    """Start gunicorn with `app`, drive it from a load process, count what was stored."""
    tag = f"{name.split()[0][:4]}{uuid.uuid4().hex[:6]}"
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"{tag}.jsonl"
    server = Gunicorn(app, database_url, log=OUT / f"{tag}.gunicorn.log")
    server.start()
    result = Result(name)
    try:
        config = {
            "urls": [server.url],
            "tag": tag,
            "customers": customers,
            "concurrency": concurrency,
            "warmup": warmup,
            "seconds": seconds,
            "max_events": max_events,
            "out": str(out),
        }
        config_path = OUT / f"{tag}.json"
        config_path.write_text(json.dumps(config))
        load = subprocess.Popen([sys.executable, "-m", "bench.loadgen", str(config_path)], cwd=ROOT)
        started_flag = Path(str(out) + ".started")
        measuring = False
        cpu_start: tuple[dict[int, float], dict[int, float]] = ({}, {})
        profiler: subprocess.Popen[bytes] | None = None
        t0 = time.monotonic()
        while load.poll() is None:
            time.sleep(0.2 if not measuring else sample_every)
            if not measuring and started_flag.exists():
                measuring = True
                t0 = time.monotonic()
                result.rss_start = server.worker_rss_mib()
                cpu_start = _cpu_seconds(server.worker_pids(), database_url)
                profiler = _start_profiler(name, server, seconds)
            if measuring:
                result.rss_samples.append((time.monotonic() - t0, server.worker_rss_mib()))
        result.rss_end = server.worker_rss_mib()
        if measuring:
            web, db = _cpu_seconds(server.worker_pids(), database_url)
            result.cpu_web = sum(web.values()) - sum(cpu_start[0].get(p, 0.0) for p in web)
            result.cpu_db = sum(db.values()) - sum(cpu_start[1].get(p, 0.0) for p in db)
        if profiler is not None:
            profiler.wait(60)
        if load.returncode != 0:
            raise RuntimeError(f"the load process failed ({load.returncode})")
    finally:
        server.stop()
    records = _read_records(out)
    measured = [r for r in records if r[0] == "measured"]
    result.requests = len(measured)
    if measured:
        first = min(r[5] for r in measured)
        last = max(r[5] + r[4] for r in measured)
        result.seconds = last - first
    result.latencies = [r[4] for r in measured]
    for r in measured:
        result.codes[r[2]] = result.codes.get(r[2], 0) + 1
        if r[3]:
            result.statuses[r[3]] = result.statuses.get(r[3], 0) + 1
    accepted = {r[1] for r in records if r[2] == 200}
    result.sent_ids = len({r[1] for r in records})
    result.accepted = len(accepted)
    _count_stored(result, database_url, app, accepted)
    return result


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds(
    worker_pids: list[int], database_url: str
) -> tuple[dict[int, float], dict[int, float]]:
    """CPU so far of the web workers and of the PostgreSQL backends serving this database.

    Backends are only visible when the server runs on this machine (it does, here).
    """
    engine = create_engine(database_url, poolclass=NullPool)
    with engine.connect() as connection:
        backends = connection.execute(
            text(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalars()
        backend_pids = list(backends)
    engine.dispose()
    return (
        {pid: process_cpu(pid) for pid in worker_pids},
        {pid: process_cpu(pid) for pid in backend_pids},
    )


def _start_profiler(name: str, server: Gunicorn, seconds: float | None) -> Any:
    """BENCH_PROFILE=NAME: sample that target's workers with py-spy while it is measured."""
    wanted = os.environ.get("BENCH_PROFILE")
    if not wanted or not name.startswith(wanted) or server.process is None:
        return None
    output = OUT / f"profile-{name.split()[0]}.txt"
    duration = str(max(1, int((seconds or 30) - 1)))
    command = [
        "py-spy",
        "record",
        "--subprocesses",
        "--format",
        "raw",
        "--rate",
        os.environ.get("BENCH_PROFILE_RATE", "100"),
        "--nonblocking",
        "--gil",
    ]
    command += ["-d", duration, "-o", str(output), "-p", str(server.process.pid)]
    print(f"profiling {name} into {output}", flush=True)
    return subprocess.Popen(
        [str(Path(sys.executable).parent / command[0]), *command[1:]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _count_stored(result: Result, database_url: str, app: str, accepted: set[str]) -> None:
    engine = create_engine(database_url)
    ids = sorted(accepted)
    with engine.connect() as connection:
        if app in (CEILING_APP, FLOOR_APP):
            table = CEILING_TABLE if app == CEILING_APP else FLOOR_TABLE
            result.stored = connection.execute(
                text(f"SELECT count(*) FROM {table} WHERE id = ANY(:ids)"),
                {"ids": ids},
            ).scalar_one()
        else:
            rows = connection.execute(
                text(
                    "SELECT status, count(*) FROM stripe_events"
                    " WHERE id = ANY(:ids) GROUP BY status"
                ),
                {"ids": ids},
            ).all()
            by_status: dict[str, int] = dict(rows)  # type: ignore[arg-type]
            result.stored = sum(by_status.values())
            result.applied = by_status.get("processed", 0)
            result.stored_statuses = by_status
            result.audit = _audit_rows(connection, ids)
    engine.dispose()


def _audit_rows(connection: Any, ids: list[str]) -> int | None:
    """Audit entries caused by these events, if the schema has an audit table."""
    row = connection.execute(
        text(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name LIKE '%audit%'"
            " AND column_name IN ('event_id', 'cause_event_id')"
        )
    ).first()
    if row is None:
        return None
    return int(
        connection.execute(
            text(f'SELECT count(*) FROM "{row[0]}" WHERE "{row[1]}" = ANY(:ids)'), {"ids": ids}
        ).scalar_one()
    )


def _merge(name: str, parts: list[Result]) -> Result:
    """One target's rounds as one result: summed counts, pooled latencies."""
    merged = Result(name)
    for part in parts:
        merged.requests += part.requests
        merged.seconds += part.seconds
        merged.latencies += part.latencies
        for code, n in part.codes.items():
            merged.codes[code] = merged.codes.get(code, 0) + n
        for status, n in part.statuses.items():
            merged.statuses[status] = merged.statuses.get(status, 0) + n
        merged.sent_ids += part.sent_ids
        merged.accepted += part.accepted
        merged.stored += part.stored
        if part.applied is not None:
            merged.applied = (merged.applied or 0) + part.applied
        if part.audit is not None:
            merged.audit = (merged.audit or 0) + part.audit
        merged.cpu_web += part.cpu_web
        merged.cpu_db += part.cpu_db
    merged.rss_start = parts[-1].rss_start
    merged.rss_end = parts[-1].rss_end
    return merged


def bulk_load(database_url: str, count: int) -> float:
    """Store `count` processed events quickly (one INSERT ... SELECT generate_series)."""
    started = time.perf_counter()
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(
            text(
                """
                INSERT INTO stripe_events (id, type, created, livemode, api_version, payload,
                                           status, attempts, customer_id, processed_at)
                SELECT 'evt_bulk_' || g, 'invoice.paid', to_timestamp(1700000000 + g), false,
                       '2025-06-30.basil',
                       jsonb_build_object(
                         'id', 'evt_bulk_' || g, 'object', 'event', 'type', 'invoice.paid',
                         'created', 1700000000 + g, 'livemode', false,
                         'api_version', '2025-06-30.basil', 'pending_webhooks', 1,
                         'data', jsonb_build_object('object', jsonb_build_object(
                           'id', 'in_bulk_' || g, 'object', 'invoice',
                           'customer', 'cus_bulk_' || (g % 100000), 'status', 'paid',
                           'amount_paid', 2900, 'amount_due', 2900, 'currency', 'usd',
                           'billing_reason', 'subscription_cycle',
                           'parent', jsonb_build_object('subscription_details',
                              jsonb_build_object('subscription', 'sub_bulk_' || (g % 100000)))))),
                       'processed', 1, 'cus_bulk_' || (g % 100000), now()
                  FROM generate_series(1, :count) AS g
                """
            ),
            {"count": count},
        )
        connection.execute(text("VACUUM ANALYZE stripe_events"))
        # Flush the load's dirty pages now, not in the middle of the measured run.
        connection.execute(text("CHECKPOINT"))
    engine.dispose()
    return time.perf_counter() - started


def _row(r: Result) -> str:
    applied = "-" if r.applied is None else str(r.applied)
    audit = "-" if r.audit is None else str(r.audit)
    return (
        f"| {r.name:<16} | {r.rate:>8.0f} | {r.pct(0.5):>6.1f} | {r.pct(0.99):>6.1f} "
        f"| {max(r.latencies, default=0) * 1000:>7.1f} | {r.requests:>7} | {r.sent_ids:>7} "
        f"| {r.accepted:>8} | {r.stored:>7} | {applied:>7} | {audit:>6} | {r.missing:>7} "
        f"| {r.cpu_per_event('web'):>6.2f} | {r.cpu_per_event('db'):>5.2f} |"
    )


HEADER = (
    "| target           | events/s | p50 ms | p99 ms |  max ms | answers |     ids "
    "| accepted |  stored | applied |  audit | missing | web ms |db ms |\n"
    "|------------------|---------:|-------:|-------:|--------:|--------:|--------:"
    "|---------:|--------:|--------:|-------:|--------:|-------:|-----:|"
)


def _rss_line(r: Result) -> str:
    parts = []
    for pid, start in sorted(r.rss_start.items()):
        end = r.rss_end.get(pid)
        if end is not None:
            parts.append(f"{start:.0f}->{end:.0f}")
    return f"{r.name}: worker RSS MiB {', '.join(parts) or 'n/a'}"


def main() -> int:
    seconds = _env_float("BENCH_SECONDS", 20)
    warmup = _env_float("BENCH_WARMUP", 3)
    customers = env_int("BENCH_CUSTOMERS", 1000)
    concurrency = env_int("BENCH_CONCURRENCY", 16)
    growth = env_int("BENCH_GROWTH_EVENTS", 1_000_000)
    memory_events = env_int("BENCH_MEMORY_EVENTS", 0)
    base = server_url()
    started = time.time()
    results: list[Result] = []
    notes: list[str] = []
    common = {
        "customers": customers,
        "seconds": seconds,
        "warmup": warmup,
        "concurrency": concurrency,
    }
    rounds = env_int("BENCH_ROUNDS", 3)
    print(
        f"bench: {os.cpu_count()} cores, concurrency {concurrency}, {seconds:.0f} s per target, "
        f"{rounds} rounds (targets alternate, so a neighbour's load spreads over all of them)"
    )
    grown: Result | None = None
    memory: Result | None = None
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(throwaway_database(base))
        grown_url = None
        if growth:
            grown_url = stack.enter_context(throwaway_database(base))
            took = bulk_load(grown_url, growth)
            notes.append(f"bulk-loaded {growth:,} stored events in {took:.0f} s")
            print(notes[-1], flush=True)
        runs: dict[str, list[Result]] = {}
        plan = [
            ("ceiling", CEILING_APP, url),
            ("floor", FLOOR_APP, url),
            ("service", SERVICE_APP, url),
        ]
        if grown_url:
            plan.append((f"service +{growth // 1000}k", SERVICE_APP, grown_url))
        for _ in range(rounds):
            for name, app, target_url in plan:
                one = run_target(name, app, target_url, **common)  # type: ignore[arg-type]
                print(_row(one), flush=True)
                runs.setdefault(name, []).append(one)
        merged = [_merge(name, parts) for name, parts in runs.items()]
        results.extend(merged)
        # Each round's own ratios: their spread says how much a neighbour moved the figures.
        per_round = [
            f"{served.rate / limit.rate:.2f}" if limit.rate else "-"
            for limit, served in zip(runs["ceiling"], runs["service"], strict=True)
        ]
        notes.append(f"service/ceiling throughput by round: {', '.join(per_round)}")
        ceiling, floor, service = merged[0], merged[1], merged[2]
        if grown_url:
            grown = merged[3]
        if memory_events:
            memory = run_target(
                f"memory {memory_events // 1000}k",
                SERVICE_APP,
                url,
                customers=customers,
                seconds=None,
                warmup=warmup,
                concurrency=concurrency,
                max_events=memory_events,
                sample_every=5.0,
            )
            results.append(memory)

    checks: list[tuple[str, bool]] = []
    throughput_ratio = service.rate / ceiling.rate if ceiling.rate else 0.0
    p99_ratio = service.pct(0.99) / ceiling.pct(0.99) if ceiling.pct(0.99) else 0.0
    checks.append(
        (f"throughput service/ceiling {throughput_ratio:.2f} >= 0.75", throughput_ratio >= 0.75)
    )
    checks.append((f"p99 service/ceiling {p99_ratio:.2f} <= 1.5", p99_ratio <= 1.5))
    floor_ratio = floor.rate / ceiling.rate if ceiling.rate else 0.0
    floor_p99 = floor.pct(0.99) / ceiling.pct(0.99) if ceiling.pct(0.99) else 0.0
    notes.append(
        f"floor/ceiling: throughput {floor_ratio:.2f}, p99 {floor_p99:.2f}"
        f" (service/floor: throughput {service.rate / floor.rate if floor.rate else 0.0:.2f})"
    )
    for r in results:
        checks.append((f"{r.name}: accepted events missing {r.missing} == 0", r.missing == 0))
        # A 500, a 503 or no answer at all (code 0: the server is down) all mean the
        # figures above are not the target's: every request must be answered 200.
        bad = sum(n for code, n in r.codes.items() if code != 200)
        checks.append((f"{r.name}: answers other than 200 {bad} == 0", bad == 0))
    if grown is not None:
        growth_ratio = grown.rate / service.rate if service.rate else 0.0
        checks.append(
            (f"growth {grown.name}/service {growth_ratio:.2f} >= 0.90", growth_ratio >= 0.90)
        )
    if memory is not None:
        checks.extend(_memory_checks(memory))

    table = "\n".join([HEADER, *(_row(r) for r in results)])
    lines = [
        table,
        "",
        *(f"- {'PASS' if ok else 'FAIL'} {label}" for label, ok in checks),
        "",
        *(f"- {_rss_line(r)}" for r in results),
        *(f"- {note}" for note in notes),
        *(f"- {r.name}: answers {r.codes}, statuses {r.statuses}" for r in results),
    ]
    report = "\n".join(lines)
    print()
    print(report)
    command = _command()
    RESULTS.write_text(
        "# Benchmark results (last run)\n\n"
        f"- command: `{command}`\n"
        f"- machine: {os.cpu_count()} cores (`nproc`), {platform.machine()}, "
        f"Python {platform.python_version()}, finished "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC after {time.time() - started:.0f} s\n"
        f"- settings: concurrency {concurrency}, {rounds} rounds of {seconds:.0f} s measured "
        f"per target (targets alternate; rows add the rounds up) after {warmup:.0f} s "
        f"warm-up, {customers} new customers linked first in each, 10 % duplicates, "
        f"WEB_CONCURRENCY={os.environ.get('WEB_CONCURRENCY', 'default')}, LOG_LEVEL=WARNING, "
        f"growth database: {growth:,} stored events bulk-loaded\n\n"
        "Columns: answers = requests answered in the measured window; ids = distinct events "
        "sent in the whole run (link, warm-up, measured); accepted = distinct events answered "
        "200; stored = accepted events found in the database; applied = stored as "
        "`processed`; audit = audit entries naming those events; missing = accepted - stored; "
        "web ms / db ms = CPU milliseconds per answered request in the gunicorn workers / in "
        "the PostgreSQL backends of the database."
        "\n\n" + report + "\n" + _memory_section(memory)
    )
    failed = [label for label, ok in checks if not ok]
    print(f"\nbench: {len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def _memory_checks(memory: Result) -> list[tuple[str, bool]]:
    """Flat: after the first fifth of the run, no worker grows by more than 10 MiB."""
    checks: list[tuple[str, bool]] = []
    samples = memory.rss_samples
    if len(samples) < 5:
        return [("memory: too few RSS samples", False)]
    early = samples[len(samples) // 5][1]
    late = samples[-1][1]
    for pid, start in sorted(early.items()):
        end = late.get(pid)
        if end is None:
            continue
        growth = end - start
        checks.append(
            (f"memory worker {pid}: {start:.1f} -> {end:.1f} MiB (+{growth:.1f})", growth <= 10)
        )
    return checks


MEMORY_HEADING = "## Memory (BENCH_MEMORY_EVENTS)"


def _memory_section(memory: Result | None) -> str:
    """This run's RSS samples, or the section of the last run that had them."""
    if memory is None:
        previous = RESULTS.read_text() if RESULTS.exists() else ""
        at = previous.find(MEMORY_HEADING)
        return "\n" + previous[at:] if at >= 0 else ""
    lines = [
        MEMORY_HEADING,
        "",
        f"- command: `{_command()}`, finished {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- {memory.requests} requests at {memory.rate:.0f}/s, answers {memory.codes}",
        "- RSS of each gunicorn worker (MiB) every sample:",
    ]
    pids = sorted({pid for _, sizes in memory.rss_samples for pid in sizes})
    step = max(1, len(memory.rss_samples) // 12)
    for t, sizes in memory.rss_samples[::step] + memory.rss_samples[-1:]:
        lines.append(f"  - t={t:5.0f} s: " + ", ".join(f"{sizes.get(p, 0):.1f}" for p in pids))
    lines += [f"- {'PASS' if ok else 'FAIL'} {label}" for label, ok in _memory_checks(memory)]
    return "\n" + "\n".join(lines) + "\n"


def _command() -> str:
    keys = [k for k in os.environ if k.startswith("BENCH_") or k == "WEB_CONCURRENCY"]
    prefix = " ".join(f"{k}={os.environ[k]}" for k in sorted(keys))
    return f"{prefix} make bench".strip()


if __name__ == "__main__":
    sys.exit(main())

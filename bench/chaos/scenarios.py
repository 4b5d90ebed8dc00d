"""The faults: a killed worker, a restarted database, a partition, two instances at once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from ..client import Connection
from ..events import PLAN_PRICE_MAP, SECRET, Workload
from ..pg import ROOT, Cluster, throwaway_database
from ..server import SERVICE_APP, Gunicorn
from .common import (
    OUT,
    Figures,
    at,
    count,
    diverged,
    finish_load,
    settle,
    start_load,
    wait_measuring,
)

# Small enough for CI, large enough that every fault lands in the middle of traffic.
CUSTOMERS = int(os.environ.get("CHAOS_CUSTOMERS", "150"))
SECONDS = float(os.environ.get("CHAOS_SECONDS", "10"))
DATABASE_TIMEOUT = 2.0


def _service(database_url: str, name: str, **env: str) -> Gunicorn:
    server = Gunicorn(
        SERVICE_APP,
        database_url,
        log=OUT / f"{name}-{uuid.uuid4().hex[:6]}.gunicorn.log",
        env={"WEB_CONCURRENCY": "3", "DATABASE_TIMEOUT": str(DATABASE_TIMEOUT), **env},
    )
    server.start()
    return server


def kill_worker(cluster: Cluster) -> Figures:
    """kill -9 two web workers mid-load: what was answered 200 is stored; the rest retries."""
    figures = Figures("kill -9 web worker")
    with throwaway_database(cluster.url, "chaos_kill") as url:
        server = _service(url, "kill")
        try:
            process, out = start_load([server.url], customers=CUSTOMERS, seconds=SECONDS)
            wait_measuring(out, process)
            start = time.monotonic()
            killed: list[int] = []

            def kill() -> None:
                pids = server.worker_pids()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])

            at(SECONDS * 0.25, kill, start)
            at(SECONDS * 0.55, kill, start)
            load = finish_load(process, out)
            figures.notes.append(f"killed workers {killed}; gunicorn replaced them")
            settle(figures, load, url, [server.url])
        finally:
            server.stop()
    return figures


def restart_database(cluster: Cluster) -> Figures:
    """Stop PostgreSQL (fast shutdown) under load, start it again: 503s, then recovery."""
    figures = Figures("restart PostgreSQL")
    with throwaway_database(cluster.url, "chaos_restart") as url:
        server = _service(url, "restart")
        try:
            process, out = start_load([server.url], customers=CUSTOMERS, seconds=SECONDS + 4)
            started_wall = wait_measuring(out, process)
            start = time.monotonic()
            at(SECONDS * 0.2, lambda: cluster.stop("fast"), start)
            down_wall = time.time()
            at(SECONDS * 0.2 + 3, cluster.start, start)
            up_wall = time.time()
            load = finish_load(process, out)
            settle(figures, load, url, [server.url])
            measured = [r for r in load.records if r[0] == "measured"]
            down = [r for r in measured if down_wall + 0.5 < started_wall + r[5] < up_wall - 0.5]
            after = [r for r in measured if started_wall + r[5] > up_wall + 3]
            down_codes = {r[2] for r in down}
            figures.notes.append(
                f"down {up_wall - down_wall:.1f} s: answers while down {sorted(down_codes)}, "
                f"{sum(r[2] == 200 for r in after)}/{len(after)} answered 200 "
                "from 3 s after restart"
            )
            figures.expect(down_codes <= {503}, f"while down, answers other than 503: {down_codes}")
            figures.expect(bool(down), "no request fell into the outage")
            figures.expect(
                bool(after) and all(r[2] == 200 for r in after),
                "the service did not recover without a restart",
            )
            figures.expect(diverged(url, "ch") == 0, "a subscription's plan is not its newest")
        finally:
            server.stop()
    return figures


def partition(cluster: Cluster) -> Figures:
    """Blackhole the path to PostgreSQL (open, silent connections): quick 503s, recovery."""
    sys.path.insert(0, str(ROOT))
    from tests.tcp_proxy import TcpProxy

    figures = Figures("network partition")
    with throwaway_database(cluster.url, "chaos_partition") as url:
        proxy = TcpProxy(url)
        server = _service(proxy.url_for(url), "partition")
        try:
            # As many connections as workers: an answer's time is the worker's, not a queue's.
            process, out = start_load(
                [server.url], customers=CUSTOMERS, seconds=SECONDS + 6, concurrency=3
            )
            started_wall = wait_measuring(out, process)
            start = time.monotonic()
            at(SECONDS * 0.2, lambda: proxy.set_mode("blackhole"), start)
            cut_wall = time.time()
            at(SECONDS * 0.2 + 6, lambda: proxy.set_mode("forward"), start)
            back_wall = time.time()
            load = finish_load(process, out)
            settle(figures, load, url, [server.url])
            measured = [r for r in load.records if r[0] == "measured"]
            # Answered while the path was cut (after the calls in flight had failed).
            cut = [r for r in measured if cut_wall + 0.5 < started_wall + r[5] + r[4] < back_wall]
            after = [r for r in measured if started_wall + r[5] > back_wall + 4]
            slowest = max((r[4] for r in cut), default=0.0)
            codes = sorted({r[2] for r in cut})
            log = server.log.read_text(errors="replace")
            timeouts = log.count("WORKER TIMEOUT")
            figures.notes.append(
                f"blackhole {back_wall - cut_wall:.1f} s: {len(cut)} answers {codes}, slowest "
                f"{slowest:.1f} s (DATABASE_TIMEOUT={DATABASE_TIMEOUT:g}); gunicorn worker "
                f"timeouts {timeouts}; {sum(r[2] == 200 for r in after)}/{len(after)} "
                "answered 200 from 4 s after the path came back"
            )
            figures.expect(bool(cut), "no request fell into the partition")
            figures.expect(set(codes) <= {503}, f"answers other than 503 while cut: {codes}")
            figures.expect(
                slowest <= DATABASE_TIMEOUT + 3, f"an answer took {slowest:.1f} s while cut"
            )
            figures.expect(timeouts == 0, "gunicorn had to kill a hung worker")
            figures.expect(
                bool(after) and all(r[2] == 200 for r in after),
                "the service did not recover without a restart",
            )
        finally:
            server.stop()
            proxy.close()
    return figures


def two_instances(cluster: Cluster) -> Figures:
    """Two web instances and two workers, duplicates spread across them: applied once."""
    figures = Figures("2 web + 2 workers")
    with throwaway_database(cluster.url, "chaos_pair") as url:
        servers = [_service(url, "pair-a"), _service(url, "pair-b")]
        workers = [_worker(url, n) for n in range(2)]
        urls = [s.url for s in servers]
        try:
            process, out = start_load(urls, customers=CUSTOMERS, seconds=SECONDS, duplicates=0.3)
            load = finish_load(process, out)
            accepted = settle(figures, load, url, urls)
            # Then every event of new customers delivered to both instances at the same
            # moment, checkouts last, so subscription events wait for their link.
            burst = Workload(f"chb{uuid.uuid4().hex[:6]}", 60, duplicates=0.0, seed=7)
            links = burst.link_all()
            stream = burst.mixed()
            events = links[1::2]  # every customer's first subscription snapshot
            events += [next(stream) for _ in range(240)]
            events += links[0::2]
            both = asyncio.run(_deliver_to_both(urls, events))
            ids = {event_id for event_id, _ in events}
            figures.sent += len(ids)
            figures.accepted += len(both & ids)
            figures.accepted_first += len(both & ids)
            figures.expect(both >= ids, "a double delivery was not accepted by either instance")
            time.sleep(3)  # the workers apply what waited for its customer
            totals = count(url, accepted | ids)
            figures.stored = totals["stored"]
            figures.applied = totals["statuses"].get("processed", 0)
            figures.applied_twice = totals["applied_twice"]
            mismatched = diverged(url, "ch")
            figures.notes.append(
                f"after burst: statuses {totals['statuses']}, audit {totals['audit']}, "
                f"subscriptions not at their newest plan {mismatched}"
            )
            figures.expect(figures.applied_twice == 0, "an event changed an account twice")
            figures.expect(figures.stored == figures.sent, "not every event sent is stored")
            figures.expect(mismatched == 0, "a subscription's plan is not its newest snapshot")
            figures.expect(
                totals["statuses"].get("pending", 0) == 0, "events still pending after link"
            )
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                worker.wait(20)
            for server in servers:
                server.stop()
    return figures


def _worker(database_url: str, n: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "PLAN_PRICE_MAP": PLAN_PRICE_MAP,
        "LOG_LEVEL": "WARNING",
        "WORKER_POLL_SECONDS": "0.5",
        "DATABASE_TIMEOUT": str(DATABASE_TIMEOUT),
    }
    log = OUT / f"worker-{n}-{uuid.uuid4().hex[:6]}.log"
    with log.open("ab") as handle:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "webhooks"), "worker"],
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


async def _deliver_to_both(urls: list[str], events: list[tuple[str, bytes]]) -> set[str]:
    """Each event to every instance at once; the ids some instance answered 200."""
    accepted: set[str] = set()
    connections = [[Connection(url) for url in urls] for _ in range(8)]

    async def lane(n: int) -> None:
        for event_id, body in events[n::8]:
            answers = await asyncio.gather(*(c.post_event(body) for c in connections[n]))
            if any(a.code == 200 for a in answers):
                accepted.add(event_id)

    await asyncio.gather(*(lane(n) for n in range(8)))
    for group in connections:
        for connection in group:
            await connection.close()
    return accepted

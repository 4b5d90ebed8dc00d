"""What the scenarios share: running load, re-delivering, and counting what was stored."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from ..client import Answer, Connection
from ..pg import ROOT

OUT = ROOT / "bench" / "out" / "chaos"


@dataclass
class Figures:
    """One scenario's outcome; `problems` lists each failed expectation in words."""

    name: str
    sent: int = 0
    accepted_first: int = 0
    accepted: int = 0
    stored: int = 0
    applied: int = 0
    lost: int = 0
    applied_twice: int = 0
    errors_500: int = 0
    codes: dict[int, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def expect(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class Load:
    """The answers of one load process: per event, every answer and the body if needed."""

    records: list[list[Any]]
    started_at: float  # wall clock when the measured phase began

    def answers(self) -> dict[str, list[list[Any]]]:
        by_id: dict[str, list[list[Any]]] = {}
        for record in self.records:
            by_id.setdefault(record[1], []).append(record)
        return by_id

    def accepted(self) -> set[str]:
        return {r[1] for r in self.records if r[2] == 200}

    def unanswered_bodies(self) -> dict[str, bytes]:
        """Events never answered 200, with their body, to deliver again."""
        accepted = self.accepted()
        return {r[1]: r[6].encode() for r in self.records if r[2] != 200 and r[1] not in accepted}

    def codes(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for r in self.records:
            counts[r[2]] = counts.get(r[2], 0) + 1
        return counts


def start_load(
    urls: list[str],
    *,
    customers: int,
    seconds: float,
    duplicates: float = 0.1,
    concurrency: int = 16,
    timeout: float = 30.0,
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start a load process (link phase, then `seconds` of mixed traffic)."""
    OUT.mkdir(parents=True, exist_ok=True)
    tag = f"ch{uuid.uuid4().hex[:8]}"
    out = OUT / f"{tag}.jsonl"
    config = {
        "urls": urls,
        "tag": tag,
        "customers": customers,
        "concurrency": concurrency,
        "duplicates": duplicates,
        "seconds": seconds,
        "timeout": timeout,
        "out": str(out),
    }
    path = OUT / f"{tag}.json"
    path.write_text(json.dumps(config))
    process = subprocess.Popen([sys.executable, "-m", "bench.loadgen", str(path)], cwd=ROOT)
    return process, out


def wait_measuring(out: Path, process: subprocess.Popen[bytes], timeout: float = 120) -> float:
    """Block until the load process has linked its customers and starts the mixed phase."""
    flag = Path(str(out) + ".started")
    deadline = time.monotonic() + timeout
    while not flag.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the load process did not reach its measured phase")
        time.sleep(0.05)
    return float(flag.read_text())


def finish_load(process: subprocess.Popen[bytes], out: Path) -> Load:
    if process.wait(300) != 0:
        raise RuntimeError(f"the load process failed ({process.returncode})")
    with out.open() as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    flag = Path(str(out) + ".started")
    return Load(records, float(flag.read_text()) if flag.exists() else 0.0)


def redeliver(
    urls: list[str], bodies: dict[str, bytes], attempts: int = 10, pause: float = 1.0
) -> tuple[set[str], list[Answer]]:
    """Deliver each body again until it is answered 200, like Stripe's retries (sooner)."""

    async def run() -> tuple[set[str], list[Answer]]:
        accepted: set[str] = set()
        answers: list[Answer] = []
        pending = dict(bodies)
        for attempt in range(attempts):
            if not pending:
                break
            if attempt:
                await asyncio.sleep(pause)
            items = list(pending.items())
            connections = [Connection(urls[n % len(urls)]) for n in range(8)]

            async def send(connection: Connection, batch: list[tuple[str, bytes]]) -> None:
                for event_id, body in batch:
                    answer = await connection.post_event(body)
                    answers.append(answer)
                    if answer.code == 200:
                        accepted.add(event_id)
                        pending.pop(event_id, None)

            await asyncio.gather(*(send(c, items[n::8]) for n, c in enumerate(connections)))
            for connection in connections:
                await connection.close()
        return accepted, answers

    return asyncio.run(run())


def count(database_url: str, ids: set[str]) -> dict[str, Any]:
    """What the database holds for these events: rows, statuses, double applications."""
    engine = create_engine(database_url)
    listed = sorted(ids)
    with engine.connect() as connection:
        statuses = dict(
            connection.execute(  # type: ignore[arg-type]
                text("SELECT status, count(*) FROM stripe_events WHERE id = ANY(:ids) GROUP BY 1"),
                {"ids": listed},
            ).all()
        )
        twice = connection.execute(
            text(
                "SELECT count(*) FROM (SELECT cause_event_id, account_id FROM audit_log"
                " WHERE cause_event_id = ANY(:ids) GROUP BY 1, 2 HAVING count(*) > 1) AS d"
            ),
            {"ids": listed},
        ).scalar_one()
        audit = connection.execute(
            text("SELECT count(*) FROM audit_log WHERE cause_event_id = ANY(:ids)"),
            {"ids": listed},
        ).scalar_one()
    engine.dispose()
    return {
        "stored": sum(statuses.values()),
        "statuses": statuses,
        "applied_twice": int(twice),
        "audit": int(audit),
    }


def diverged(database_url: str, tag_prefix: str) -> int:
    """Subscriptions whose stored plan is not the plan of their newest stored snapshot."""
    engine = create_engine(database_url)
    with engine.connect() as connection:
        mismatched = connection.execute(
            text(
                """
                WITH latest AS (
                  SELECT DISTINCT ON (payload #>> '{data,object,id}')
                         payload #>> '{data,object,id}' AS subscription_id,
                         payload #>> '{data,object,items,data,0,price,metadata,plan}' AS plan
                    FROM stripe_events
                   WHERE type LIKE 'customer.subscription.%' AND id LIKE :prefix
                   ORDER BY payload #>> '{data,object,id}', created DESC)
                SELECT count(*) FROM latest
                  LEFT JOIN subscriptions s ON s.id = latest.subscription_id
                  LEFT JOIN accounts a ON a.id = s.account_id
                 WHERE s.plan IS DISTINCT FROM latest.plan OR a.plan IS DISTINCT FROM latest.plan
                """
            ),
            {"prefix": f"evt_{tag_prefix}%"},
        ).scalar_one()
    engine.dispose()
    return int(mismatched)


def settle(figures: Figures, load: Load, database_url: str, urls: list[str]) -> set[str]:
    """Re-deliver what was not accepted, then fill in the figures from the database."""
    sent = set(load.answers())
    accepted_first = load.accepted()
    retry = load.unanswered_bodies()
    accepted_retry, answers = redeliver(urls, retry)
    accepted = accepted_first | accepted_retry
    counts = count(database_url, sent)
    stored_first = count(database_url, accepted_first)["stored"]
    figures.sent = len(sent)
    figures.accepted_first = len(accepted_first)
    figures.accepted = len(accepted)
    figures.stored = counts["stored"]
    figures.applied = counts["statuses"].get("processed", 0)
    figures.lost = len(accepted_first) - stored_first
    figures.applied_twice = counts["applied_twice"]
    figures.codes = load.codes()
    for answer in answers:
        figures.codes[answer.code] = figures.codes.get(answer.code, 0) + 1
    figures.errors_500 = sum(n for code, n in figures.codes.items() if code >= 500 and code != 503)
    figures.notes.append(f"statuses {counts['statuses']}, audit entries {counts['audit']}")
    figures.notes.append(f"re-delivered {len(retry)}, accepted on retry {len(accepted_retry)}")
    figures.expect(figures.lost == 0, f"{figures.lost} events answered 200 are not stored")
    figures.expect(
        figures.accepted == figures.sent,
        f"{figures.sent - figures.accepted} events never accepted, even on retry",
    )
    figures.expect(figures.stored == figures.sent, "not every event sent is stored")
    figures.expect(figures.applied_twice == 0, "an event changed an account twice")
    figures.expect(figures.errors_500 == 0, f"{figures.errors_500} answers 5xx other than 503")
    return accepted


def at(seconds: float, action: Callable[[], None], start: float) -> None:
    """Run `action` when `seconds` have passed since `start` (time.monotonic)."""
    delay = start + seconds - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    action()

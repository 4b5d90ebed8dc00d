"""The load process: `python -m bench.loadgen CONFIG.json` drives one server (or several).

Runs in its own process so the load it puts on the CPU is not counted inside the server.
Phases, each optional: `link` (every customer's checkout and first subscription, untimed),
`warmup` seconds of mixed traffic (not measured), then the measured mixed phase for
`seconds` or until `max_events` requests. Every answer is written to `out` as JSON
lines, so the caller can compare what was accepted with what the database holds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from .client import Connection
from .events import Event, Workload


async def _drive(
    urls: list[str],
    events: Iterable[Event],
    concurrency: int,
    phase: str,
    out: TextIO,
    *,
    deadline: float | None = None,
    max_events: int | None = None,
    timeout: float = 30.0,
) -> int:
    """Send `events` from `concurrency` connections until exhausted, deadline or count."""
    iterator: Iterator[Event] = iter(events)
    if max_events is not None:
        iterator = itertools.islice(iterator, max_events)
    sent = 0
    started = time.perf_counter()

    async def worker(n: int) -> None:
        nonlocal sent
        connection = Connection(urls[n % len(urls)], timeout=timeout)
        try:
            while deadline is None or time.monotonic() < deadline:
                try:
                    event_id, body = next(iterator)
                except StopIteration:
                    return
                sent += 1
                at = time.perf_counter() - started
                answer = await connection.post_event(body)
                record = [phase, event_id, answer.code, answer.status, answer.seconds, at]
                if answer.code != 200:
                    record.append(body.decode())
                out.write(json.dumps(record) + "\n")
        finally:
            await connection.close()

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return sent


async def run(config: dict[str, Any]) -> None:
    workload = Workload(
        config["tag"], config["customers"], config.get("duplicates", 0.1), config.get("seed", 1)
    )
    urls: list[str] = config["urls"]
    concurrency: int = config.get("concurrency", 16)
    timeout: float = config.get("timeout", 30.0)
    with Path(config["out"]).open("w") as out:
        link = workload.link_all()
        if config.get("link", True):
            await _drive(urls, link, concurrency, "link", out, timeout=timeout)
        mixed = workload.mixed()
        if warmup := config.get("warmup", 0):
            deadline = time.monotonic() + warmup
            await _drive(urls, mixed, concurrency, "warmup", out, deadline=deadline)
        seconds = config.get("seconds")
        max_events = config.get("max_events")
        if seconds or max_events:
            Path(config["out"] + ".started").write_text(str(time.time()))
            deadline = time.monotonic() + seconds if seconds else None
            await _drive(
                urls,
                mixed,
                concurrency,
                "measured",
                out,
                deadline=deadline,
                max_events=max_events,
                timeout=timeout,
            )


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    asyncio.run(run(config))


if __name__ == "__main__":
    main()

"""`make chaos` (`python -m bench.chaos [scenario ...]`): run the faults, print the figures.

Scenarios: kill, restart, partition, pair, fuzz (all by default). CHAOS_SECONDS (10),
CHAOS_CUSTOMERS (150) and CHAOS_FUZZ_SECONDS (30) size the run. Exit status 1 when an
expectation fails.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from ..pg import Cluster, throwaway_database
from . import fuzz, scenarios
from .common import Figures

SCENARIOS: dict[str, Callable[[Cluster], Figures]] = {
    "kill": scenarios.kill_worker,
    "restart": scenarios.restart_database,
    "partition": scenarios.partition,
    "pair": scenarios.two_instances,
}


def _fuzz(cluster: Cluster) -> Figures:
    with throwaway_database(cluster.url, "chaos_fuzz") as url:
        return fuzz.run(url, float(os.environ.get("CHAOS_FUZZ_SECONDS", "30")))


def main() -> int:
    wanted = sys.argv[1:] or [*SCENARIOS, "fuzz"]
    cluster = Cluster("chaos-postgres")
    cluster.init()
    cluster.start()
    results: list[Figures] = []
    started = time.monotonic()
    try:
        for name in wanted:
            run = _fuzz if name == "fuzz" else SCENARIOS[name]
            print(f"chaos: {name} ...", flush=True)
            t0 = time.monotonic()
            try:
                figures = run(cluster)
            except Exception as exc:  # a scenario that breaks is a failed one
                figures = Figures(name)
                figures.problems.append(f"scenario crashed: {type(exc).__name__}: {exc}")
            figures.notes.append(f"took {time.monotonic() - t0:.0f} s")
            results.append(figures)
            _print(figures)
    finally:
        cluster.destroy()
    print()
    print(
        "| scenario             |  sent | accepted 1st | accepted | stored | applied "
        "| lost | applied twice | 5xx not 503 | result |"
    )
    print(
        "|----------------------|------:|-------------:|---------:|-------:|--------:"
        "|-----:|--------------:|------------:|--------|"
    )
    for f in results:
        print(
            f"| {f.name:<20} | {f.sent:>5} | {f.accepted_first:>12} | {f.accepted:>8} "
            f"| {f.stored:>6} | {f.applied:>7} | {f.lost:>4} | {f.applied_twice:>13} "
            f"| {f.errors_500:>11} | {'pass' if f.passed else 'FAIL'}   |"
        )
    failed = [f for f in results if not f.passed]
    took = time.monotonic() - started
    print(f"\nchaos took {took:.0f} s")
    print(f"chaos: {len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def _print(figures: Figures) -> None:
    print(
        f"  {figures.name}: sent {figures.sent}, accepted {figures.accepted_first} first try / "
        f"{figures.accepted} after retry, stored {figures.stored}, applied {figures.applied}, "
        f"lost {figures.lost}, applied twice {figures.applied_twice}, answers {figures.codes}",
        flush=True,
    )
    for note in figures.notes:
        print(f"    - {note}")
    for problem in figures.problems:
        print(f"    ! {problem}")


if __name__ == "__main__":
    sys.exit(main())

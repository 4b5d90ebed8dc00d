"""What `/health` measures, and how the readings become the draft's check entries.

Everything comes from one statement, so a check costs the database one round trip:
the failed and pending counts (index-only scans of the partial `ix_stripe_events_backlog`,
capped so a huge backlog cannot make the check itself slow), the oldest unsettled event
(the same partial index), and the newest event (`ix_stripe_events_received_at`).
Ages are computed by the database's own clock, so a skewed web host cannot distort them.

The entries follow draft-inadarei-api-health-check: keys in `component:measurement` form,
each entry with its own `status`, `observedValue` and `observedUnit`, and an `output`
only when not passing. Outputs are fixed sentences: no error text, host or customer data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import Connection, text

from ..config import Settings

Status = Literal["pass", "warn", "fail"]
PASS: Final = "pass"  # noqa: S105 - a health status, not a password
WARN: Final = "warn"
FAIL: Final = "fail"
_SEVERITY: Final[dict[Status, int]] = {PASS: 0, WARN: 1, FAIL: 2}

DATABASE_KEY: Final = "postgresql:responseTime"
BACKLOG_KEY: Final = "stripe-events:backlog"
LAST_RECEIVED_KEY: Final = "stripe-events:lastReceived"
CHECK_KEYS: Final = (DATABASE_KEY, BACKLOG_KEY, LAST_RECEIVED_KEY)

# Counting stops here: past it the number no longer changes what anybody does, and
# counting a million rows every few seconds would make the health check a load of its own.
MIN_COUNT_CAP: Final = 10_000

READINGS_SQL: Final = text(
    """
    SELECT
      (SELECT count(*) FROM (SELECT 1 FROM stripe_events
                              WHERE status = 'failed' LIMIT :cap) AS f) AS failed,
      (SELECT count(*) FROM (SELECT 1 FROM stripe_events
                              WHERE status = 'pending' LIMIT :cap) AS p) AS pending,
      extract(epoch FROM statement_timestamp() - (
        SELECT received_at FROM stripe_events
         WHERE status IN ('failed', 'pending', 'received')
         ORDER BY received_at LIMIT 1))::float8 AS oldest_age,
      extract(epoch FROM statement_timestamp() - (
        SELECT max(received_at) FROM stripe_events))::float8 AS last_received_age
    """
)


@dataclass(frozen=True)
class Readings:
    """What one round trip observed; ages are `None` when there is no such event."""

    response_time_ms: float
    failed: int
    pending: int
    oldest_age_seconds: float | None
    last_received_age_seconds: float | None


@dataclass(frozen=True)
class Thresholds:
    """When a reading turns `warn`; a seconds threshold of 0 switches that warning off."""

    backlog: int
    oldest_seconds: float
    last_received_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(
            backlog=settings.health_backlog_warn,
            oldest_seconds=settings.health_oldest_warn_seconds,
            last_received_seconds=settings.health_last_received_warn_seconds,
        )

    @property
    def count_cap(self) -> int:
        return max(MIN_COUNT_CAP, self.backlog * 10)


def read(connection: Connection, thresholds: Thresholds) -> Readings:
    """Run the one statement and return its readings, timing the round trip alone."""
    started = time.perf_counter()
    row = connection.execute(READINGS_SQL, {"cap": thresholds.count_cap}).one()
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    return Readings(
        response_time_ms=elapsed_ms,
        failed=int(row.failed),
        pending=int(row.pending),
        oldest_age_seconds=_seconds(row.oldest_age),
        last_received_age_seconds=_seconds(row.last_received_age),
    )


def _seconds(value: float | None) -> float | None:
    # A clock step on the database host must not show as a negative age.
    return None if value is None else max(0.0, round(float(value), 1))


Entry = dict[str, Any]
Checks = dict[str, list[Entry]]


def passing_checks(readings: Readings, thresholds: Thresholds, at: datetime) -> Checks:
    """The entries for a database that answered: `pass`, or `warn` past a threshold."""
    time = _iso(at)
    database = _entry("datastore", readings.response_time_ms, "ms", PASS, time)
    failed = _count_entry("failed", readings.failed, thresholds, time)
    pending = _count_entry("pending", readings.pending, thresholds, time)
    oldest = _age_entry(
        "oldest",
        readings.oldest_age_seconds,
        thresholds.oldest_seconds,
        "the oldest unsettled event is older than HEALTH_OLDEST_WARN_SECONDS",
        time,
    )
    last = _age_entry(
        None,
        readings.last_received_age_seconds,
        thresholds.last_received_seconds,
        "no event received for longer than HEALTH_LAST_RECEIVED_WARN_SECONDS",
        time,
    )
    return {
        DATABASE_KEY: [database],
        BACKLOG_KEY: [failed, pending, oldest],
        LAST_RECEIVED_KEY: [last],
    }


def failing_checks(output: str, elapsed_ms: float, at: datetime) -> Checks:
    """The entries when the database did not answer: nothing could be measured.

    Every entry says `fail`, so the text `"status":"pass"` appears nowhere in a failing
    answer and a keyword monitor cannot mistake it for a healthy one.
    """
    time = _iso(at)
    unmeasured = "not measured: the database did not answer"
    database = _entry("datastore", round(elapsed_ms, 1), "ms", FAIL, time, output=output)
    backlog = [
        _entry("component", None, unit, FAIL, time, component_id=name, output=unmeasured)
        for name, unit in (("failed", "events"), ("pending", "events"), ("oldest", "s"))
    ]
    last = _entry("component", None, "s", FAIL, time, output=unmeasured)
    return {DATABASE_KEY: [database], BACKLOG_KEY: backlog, LAST_RECEIVED_KEY: [last]}


def overall(checks: Checks) -> Status:
    """The worst status of any entry: one `fail` fails the service, one `warn` warns."""
    statuses: list[Status] = [entry["status"] for entries in checks.values() for entry in entries]
    return max(statuses, key=_SEVERITY.__getitem__, default=PASS)


def outputs(checks: Checks) -> list[str]:
    """The outputs of the entries that do not pass, prefixed with their check key, once each."""
    found = (
        f"{key}: {entry['output']}"
        for key, entries in checks.items()
        for entry in entries
        if entry["status"] != PASS and "output" in entry
    )
    return list(dict.fromkeys(found))


def _count_entry(name: str, count: int, thresholds: Thresholds, time: str) -> Entry:
    status: Status = WARN if count >= thresholds.backlog else PASS
    output = f"{name} events at or above HEALTH_BACKLOG_WARN ({thresholds.backlog})"
    if count >= thresholds.count_cap:
        output += f"; counting stopped at {thresholds.count_cap}"
    return _entry(
        "component",
        count,
        "events",
        status,
        time,
        component_id=name,
        output=output if status == WARN else None,
    )


def _age_entry(
    component_id: str | None, age: float | None, threshold: float, output: str, time: str
) -> Entry:
    status: Status = WARN if threshold > 0 and age is not None and age > threshold else PASS
    return _entry(
        "component",
        age,
        "s",
        status,
        time,
        component_id=component_id,
        output=output if status == WARN else None,
    )


def _entry(
    component_type: str,
    value: float | int | None,
    unit: str,
    status: Status,
    time: str,
    *,
    component_id: str | None = None,
    output: str | None = None,
) -> Entry:
    # `status` is deliberately not the first key: a document starting with `{"status":`
    # is the top level, which lets a keyword monitor match `{"status":"pass"` exactly.
    entry: Entry = {}
    if component_id is not None:
        entry["componentId"] = component_id
    entry["componentType"] = component_type
    entry["observedValue"] = value
    entry["observedUnit"] = unit
    entry["status"] = status
    entry["time"] = time
    if output is not None:
        entry["output"] = output
    return entry


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")

"""The health check's guard rails: a time box, one check at a time, a shared result.

A monitor polling every second from several places must neither load the database nor
tie up workers, whatever state the database is in. So, per process:

- the checks run on a dedicated engine (one connection, autocommit, `connect_timeout`,
  `statement_timeout`), never on the pool the webhooks need;
- the check runs in a daemon thread and the request waits for it at most
  `HEALTH_DB_TIMEOUT`. When the database hangs (connections accepted, nothing answers),
  the watchdog shuts the connection's socket so the thread ends too, and the answer is
  `fail`. While an abandoned check is still connecting (bounded by `connect_timeout`), no
  new one starts: the answer is `fail` at once, so checks never pile up;
- the result is shared for `HEALTH_CACHE_SECONDS`, and requests arriving while a check
  runs wait for that same check (single flight) instead of starting their own.

Nothing is cached across a failure beyond that interval, so the service reports `pass`
again on its own once the database is back: no restart needed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from ..config import Settings
from . import checks
from .checks import Checks, Readings, Status, Thresholds

log = logging.getLogger(__name__)

# Extra time a request waiting on another request's check allows beyond the time box,
# for the thread switch; the check itself is bounded by the box.
_FOLLOWER_GRACE: Final = 0.5
# An abandoned check normally ends within connect_timeout; should one never return
# (a driver bug), stop waiting for it after this many time boxes and start afresh.
_ABANDONED_LIMIT: Final = 30

TIMED_OUT: Final = "no answer within HEALTH_DB_TIMEOUT"
UNAVAILABLE: Final = "database unavailable"
ERROR: Final = "database check failed"
STILL_RUNNING: Final = "the previous database check has not returned yet"


def make_health_engine(url: URL | str, settings: Settings) -> Engine:
    """A one-connection engine for the health check only, bounded on every side.

    Autocommit and no reset-on-return keep a check at exactly one round trip.
    `connect_timeout` bounds a connection attempt (libpq's minimum is 2 s, which is why
    the watchdog, not this, keeps the answer inside the time box).
    """
    timeout_ms = max(1, int(settings.health_db_timeout * 1000))
    return create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        pool_size=1,
        max_overflow=1,
        pool_timeout=settings.health_db_timeout,
        pool_recycle=1800,
        pool_reset_on_return=None,
        connect_args={
            "connect_timeout": max(2, math.ceil(settings.health_db_timeout)),
            "options": f"-c statement_timeout={timeout_ms}",
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
            "tcp_user_timeout": max(1000, timeout_ms),
            "application_name": "billing-webhooks-health",
        },
    )


@dataclass(frozen=True)
class Report:
    """One check's outcome: the overall status and the draft's `checks` object."""

    status: Status
    checks: Checks
    at: datetime


class _Attempt:
    """One run of the check in its thread, and the socket the watchdog may shut."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.readings: Readings | None = None
        self.error: BaseException | None = None
        self.abandoned = False
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None

    def watch(self, connection: Connection) -> None:
        """Keep a duplicate of the connection's socket, so shutting it cannot hit a reused fd."""
        dbapi_connection = connection.connection.dbapi_connection
        if dbapi_connection is None:
            return
        duplicate = socket.socket(fileno=os.dup(dbapi_connection.fileno()))
        with self._lock:
            if self.abandoned:
                duplicate.close()
                raise TimeoutError(TIMED_OUT)
            self._socket = duplicate

    def unwatch(self) -> None:
        with self._lock:
            duplicate, self._socket = self._socket, None
        if duplicate is not None:
            duplicate.close()

    def abandon(self) -> None:
        """Give up on the check: shut its socket so a blocked read returns at once."""
        with self._lock:
            self.abandoned = True
            if self._socket is not None:
                with contextlib.suppress(OSError):
                    self._socket.shutdown(socket.SHUT_RDWR)


@dataclass
class _Flight:
    """A check in progress that later requests wait for instead of starting their own."""

    done: threading.Event = field(default_factory=threading.Event)
    report: Report | None = None


class HealthMonitor:
    """Runs the checks for one process: time-boxed, single flight, result shared a while."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.thresholds = Thresholds.from_settings(settings)
        self.time_box = max(0.05, settings.health_db_timeout)
        self.cache_seconds = settings.health_cache_seconds
        self._lock = threading.Lock()
        self._cached: Report | None = None
        self._cached_until = 0.0
        self._flight: _Flight | None = None
        self._abandoned: threading.Thread | None = None
        self._abandoned_at = 0.0
        self._last_status: Status | None = None
        self._last_failure: tuple[str, str] | None = None

    def report(self) -> Report:
        """The shared result when it is fresh, else the result of one new (or running) check."""
        with self._lock:
            if self._cached is not None and time.monotonic() < self._cached_until:
                return self._cached
            flight = self._flight
            leader = flight is None
            if flight is None:
                flight = self._flight = _Flight()
        if not leader:
            flight.done.wait(self.time_box + _FOLLOWER_GRACE)
            return flight.report or self._failed(STILL_RUNNING, self.time_box * 1000)
        report: Report | None = None
        try:
            report = self._check()
        finally:
            if report is None:  # only when _check raised, which it is written not to do
                report = self._failed(ERROR, 0.0)
            with self._lock:
                self._cached = report
                self._cached_until = time.monotonic() + self.cache_seconds
                self._flight = None
                self._log_transition(report)
            flight.report = report
            flight.done.set()
        return report

    def dispose(self) -> None:
        self.engine.dispose()

    def _check(self) -> Report:
        started = time.perf_counter()
        if self._abandoned is not None:
            still_running = self._abandoned.is_alive()
            given_up = time.monotonic() - self._abandoned_at > _ABANDONED_LIMIT * self.time_box
            if still_running and not given_up:
                return self._failed(STILL_RUNNING, 0.0)
            self._abandoned = None
        attempt = _Attempt()
        thread = threading.Thread(
            target=self._run, args=(attempt,), name="health-check", daemon=True
        )
        thread.start()
        if not attempt.done.wait(self.time_box):
            attempt.abandon()
            self._abandoned, self._abandoned_at = thread, time.monotonic()
            self._log_failure(TIMED_OUT, "timeout")
            return self._failed(TIMED_OUT, (time.perf_counter() - started) * 1000)
        if attempt.readings is not None:
            self._last_failure = None
            at = datetime.now(UTC)
            entries = checks.passing_checks(attempt.readings, self.thresholds, at)
            return Report(checks.overall(entries), entries, at)
        # Unreachable or gone is "unavailable"; anything else (say, migrations not run) is
        # the check failing, which the log names by type for whoever is on call.
        unreachable = OperationalError | InterfaceError | OSError
        output = UNAVAILABLE if isinstance(attempt.error, unreachable) else ERROR
        self._log_failure(output, type(attempt.error).__name__)
        return self._failed(output, (time.perf_counter() - started) * 1000)

    def _run(self, attempt: _Attempt) -> None:
        """The thread's body: read, retrying once on a pooled connection found dead."""
        try:
            try:
                attempt.readings = self._read(attempt)
            except DBAPIError as exc:
                # A connection the pool kept across a database restart fails on first use;
                # one fresh connection decides, unless the watchdog has already given up.
                if not exc.connection_invalidated or attempt.abandoned:
                    raise
                attempt.readings = self._read(attempt)
        except Exception as exc:  # handed to the waiting request, which reports it
            attempt.error = exc
        finally:
            attempt.done.set()

    def _read(self, attempt: _Attempt) -> Readings:
        with self.engine.connect() as connection:
            attempt.watch(connection)
            try:
                return checks.read(connection, self.thresholds)
            finally:
                attempt.unwatch()

    def _failed(self, output: str, elapsed_ms: float) -> Report:
        at = datetime.now(UTC)
        return Report(checks.FAIL, checks.failing_checks(output, elapsed_ms, at), at)

    def _log_failure(self, reason: str, error_type: str) -> None:
        """Log why the check failed, once per kind of failure rather than once per check."""
        if self._last_failure == (reason, error_type):
            return
        self._last_failure = (reason, error_type)
        log.warning("health.database.failed", extra={"reason": reason, "error_type": error_type})

    def _log_transition(self, report: Report) -> None:
        if report.status == self._last_status:
            return
        previous, self._last_status = self._last_status, report.status
        level = logging.INFO if report.status == checks.PASS else logging.WARNING
        log.log(
            level,
            "health.status.changed",
            extra={"from": previous, "to": report.status, "outputs": checks.outputs(report.checks)},
        )

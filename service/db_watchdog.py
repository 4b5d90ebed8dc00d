"""A watchdog that ends a database call the server never answers.

`statement_timeout` and `lock_timeout` are enforced by the server, and TCP keepalives
and `tcp_user_timeout` notice a peer whose packets stop being acknowledged. None of them
help when the connection is open and acknowledged but nothing answers: a frozen server,
a hung proxy or pooler. A psycopg call then blocks forever, and a webhook would hang until
gunicorn kills the worker instead of answering 503 so Stripe retries.

The watchdog arms a deadline when a statement, commit or rollback starts and disarms it
when the connection goes back to the pool (or the statement ends). One thread per process
checks the deadlines; a connection whose deadline passed while a command is still in
progress has its socket shut down, so the blocked call raises `OperationalError`, which
SQLAlchemy treats as a disconnect (the connection is discarded) and the view turns into
a 503. The deadline is the database timeout plus a grace second, after the server's own
timeouts would have answered.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import weakref
from typing import Any

from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, event

log = logging.getLogger(__name__)

GRACE_SECONDS = 1.0


# This process's id, refreshed in a forked child, so `arm` needs no system call to notice
# that it runs in a new gunicorn worker, where the parent's thread does not exist.
_PID = os.getpid()


def _refresh_pid() -> None:
    global _PID
    _PID = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


class Watchdog:
    """Deadlines of the connections of one engine, and the thread that enforces them.

    `arm` and `disarm` run around every statement, so they are one dictionary write each
    (atomic under the GIL): no lock, no wake-up, no system call. The thread wakes every
    `interval`, copies the dictionary in one C call, and takes the lock only to claim an
    expired entry that is still the one it saw.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._deadlines: dict[int, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._pid: int | None = None

    def arm(self, dbapi_connection: Any) -> None:
        self._deadlines[id(dbapi_connection)] = (time.monotonic() + self.limit, dbapi_connection)
        if self._pid != _PID:  # first use, or first use after a fork
            self._start()

    def disarm(self, dbapi_connection: Any) -> None:
        self._deadlines.pop(id(dbapi_connection), None)

    def _start(self) -> None:
        with self._lock:
            if self._pid == _PID:
                return
            self._pid = _PID
            threading.Thread(target=self._run, name="db-watchdog", daemon=True).start()

    def _run(self) -> None:
        interval = min(0.1, self.limit / 10)
        while True:
            time.sleep(interval)
            if not self._deadlines:
                continue
            now = time.monotonic()
            expired = []
            for key, entry in self._deadlines.copy().items():
                if entry[0] <= now and self._deadlines.get(key) is entry:
                    with self._lock:
                        # A re-armed entry (a new call) is not `entry`: it is left alone.
                        if self._deadlines.get(key) is entry:
                            del self._deadlines[key]
                            expired.append(entry[1])
            for conn in expired:
                try:
                    _shut_if_busy(conn, self.limit)
                except Exception:  # the watchdog must outlive any one connection
                    log.exception("db.watchdog.error")


def _shut_if_busy(dbapi_connection: Any, limit: float) -> None:
    """Shut the socket of a connection still waiting on a command (not one merely idle)."""
    if dbapi_connection.closed or (
        dbapi_connection.info.transaction_status != TransactionStatus.ACTIVE
    ):
        return
    # OSError or ValueError: the connection was closed meanwhile, nothing left to end.
    with contextlib.suppress(OSError, ValueError):
        # A duplicate descriptor: shutting it down ends the connection for psycopg too,
        # while closing it leaves psycopg's own descriptor alone.
        sock = socket.socket(fileno=os.dup(dbapi_connection.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
        log.warning("db.watchdog.connection_shut", extra={"after_seconds": limit})


# The watchdog of each engine, for code that runs a call on a raw DBAPI connection of the
# engine's pool (the webhook's direct path), where no SQLAlchemy event arms it.
_WATCHDOGS: weakref.WeakKeyDictionary[Engine, Watchdog] = weakref.WeakKeyDictionary()


def watchdog_of(engine: Engine) -> Watchdog:
    """The watchdog `install` put on `engine`; raises KeyError when there is none."""
    return _WATCHDOGS[engine]


def install(engine: Engine, timeout: float) -> Watchdog:
    """Watch every connection of `engine`; calls outliving `timeout` + grace are ended."""
    watchdog = Watchdog(timeout + GRACE_SECONDS)
    _WATCHDOGS[engine] = watchdog

    def arm_cursor(conn: Any, cursor: Any, *args: Any) -> None:
        watchdog.arm(cursor.connection)

    def disarm_cursor(conn: Any, cursor: Any, *args: Any) -> None:
        watchdog.disarm(cursor.connection)

    def arm_connection(conn: Any, *args: Any) -> None:
        with contextlib.suppress(Exception):  # an invalidated connection has nothing to watch
            watchdog.arm(conn.connection.dbapi_connection)

    def disarm_pooled(dbapi_connection: Any, *args: Any) -> None:
        if dbapi_connection is not None:
            watchdog.disarm(dbapi_connection)

    event.listen(engine, "before_cursor_execute", arm_cursor)
    event.listen(engine, "after_cursor_execute", disarm_cursor)
    event.listen(engine, "commit", arm_connection)
    event.listen(engine, "rollback", arm_connection)
    for pool_event in ("checkin", "invalidate", "soft_invalidate", "close", "detach"):
        event.listen(engine.pool, pool_event, disarm_pooled)
    return watchdog

"""The direct path's database connection: one per thread, checked out once and kept.

Checking a connection out of SQLAlchemy's pool and back in, with its events and the reset
on return, and switching it to autocommit and back, cost about 40 µs of Python per event
(in-process, the whole webhook took 350 µs of CPU per event with it, 310 µs without). So
each thread checks one connection out of the engine's pool, switches it to autocommit
once, and keeps it for later events:

- it still counts against DATABASE_POOL_SIZE, and the full path and ops requests of the
  same thread take their connections from the pool as before;
- a connection error, or finding it closed, discards it (the pool replaces it), and one
  held for longer than the pool's `recycle` goes back to the pool and is replaced, as a
  pooled one would be;
- `engine.dispose()` closes every held connection, as it closes the pooled ones;
- a forked child never uses its parent's connection.
"""

from __future__ import annotations

import threading
import weakref
from os import getpid
from time import monotonic
from typing import Any

import psycopg
from sqlalchemy import Engine, event
from sqlalchemy.pool import PoolProxiedConnection


class _Held:
    """One checked-out connection, with what decides whether it may still be used."""

    __slots__ = ("connection", "expires", "pid", "pooled")

    def __init__(self, pooled: PoolProxiedConnection, lifetime: float) -> None:
        self.pooled = pooled
        self.connection: psycopg.Connection[Any] = pooled.driver_connection  # type: ignore[assignment]
        self.connection.autocommit = True
        self.pid = getpid()
        self.expires = monotonic() + lifetime

    def give_back(self) -> None:
        """Return the connection to the pool as the pool expects it (not in autocommit)."""
        if not self.connection.closed:
            self.connection.autocommit = False
        self.pooled.close()


class HeldConnections:
    """The connection each thread keeps for the direct path (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        # Weak: the registry below is keyed weakly by the engine, which this must not keep.
        self._engine = weakref.ref(engine)
        recycle = engine.pool._recycle  # the pool's own setting; -1 means never
        self.lifetime = recycle if recycle > 0 else float("inf")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: set[_Held] = set()
        event.listen(engine, "engine_disposed", self._close_all)

    def get(self) -> psycopg.Connection[Any]:
        """This thread's connection; raises what `engine.raw_connection()` raises."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None:
            if held.pid == getpid() and not held.connection.closed and monotonic() < held.expires:
                return held.connection
            self._retire(held)
        engine = self._engine()
        if engine is None:
            raise RuntimeError("The engine of these connections is gone")
        held = _Held(engine.raw_connection(), self.lifetime)
        self._keep(held)
        return held.connection

    def _retire(self, held: _Held) -> None:
        """Stop using `held`: a closed one is dropped, an old one goes back to the pool,
        and a parent process's is left alone (the parent may still be using it)."""
        self._forget(held)
        if held.pid != getpid():
            return
        if held.connection.closed:
            held.pooled.invalidate()  # so the pool stops counting it
        else:
            held.give_back()

    def discard(self, error: BaseException) -> None:
        """Drop this thread's connection after `error` (the pool replaces it)."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None:
            self._forget(held)
            held.pooled.invalidate(error)

    def _keep(self, held: _Held) -> None:
        self._local.held = held
        with self._lock:
            self._all.add(held)

    def _forget(self, held: _Held) -> None:
        self._local.held = None
        with self._lock:
            self._all.discard(held)

    def _close_all(self, *args: Any) -> None:
        with self._lock:
            everything, self._all = self._all, set()
        for held in everything:
            if held.pid == getpid():
                held.pooled.invalidate()  # closes the connection; the pool forgets it
        self._local = threading.local()


_HELD: weakref.WeakKeyDictionary[Engine, HeldConnections] = weakref.WeakKeyDictionary()
_HELD_LOCK = threading.Lock()


def held_connections(engine: Engine) -> HeldConnections:
    """The held connections of `engine`, created on first use."""
    held = _HELD.get(engine)
    if held is None:
        with _HELD_LOCK:
            held = _HELD.get(engine)
            if held is None:
                held = _HELD[engine] = HeldConnections(engine)
    return held

"""The direct path keeps one connection per thread (`stripe_webhooks/held_connection.py`).

What this module proves: every direct event runs on the same kept connection, which stays
checked out of the pool; a connection the server ended is replaced and the event sent
again (a 503 only when the replacement fails too); `engine.dispose()` closes it; one kept
past the pool's recycle time, one found closed, or one inherited from a parent process,
is replaced.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from service.stripe_webhooks import held_connection
from service.stripe_webhooks.held_connection import held_connections
from tests.billing import stripe_objects as so
from tests.billing.db import PRO, SCALE, deliver, quota
from tests.helpers import post_event
from tests.stripe_webhooks.test_direct import (
    ACCOUNT,
    checkout,
    forbid_full_path,
    subscription_updated,
)


def kept_backend(engine: Engine) -> int:
    """The server process behind this thread's kept connection."""
    pid: int = held_connections(engine).get().info.backend_pid
    return pid


def last_query_of(database_url: str, backend: int) -> str | None:
    """What `backend` ran last, seen from another connection (None: it is gone)."""
    observer = create_engine(database_url)
    try:
        with observer.connect() as connection:
            query: str | None = connection.execute(
                text("SELECT query FROM pg_stat_activity WHERE pid = :pid"), {"pid": backend}
            ).scalar()
            return query
    finally:
        observer.dispose()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_every_direct_event_runs_on_the_one_kept_connection(
    client: FlaskClient, engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_full_path(monkeypatch)
    backends = set()
    for delivery in (
        checkout(),
        subscription_updated("evt_kept_1", so.PRO, so.T0 + 200),
        subscription_updated("evt_kept_2", so.SCALE, so.T0 + 300),
    ):
        assert deliver(client, delivery) == "processed"
        backend = kept_backend(engine)
        backends.add(backend)
        assert "stripe_receive_event" in (last_query_of(database_url, backend) or "")

    assert len(backends) == 1
    assert engine.pool.checkedout() == 1  # the kept one: the rest went back to the pool
    assert quota(engine, ACCOUNT) == SCALE


def terminate(database_url: str, backend: int) -> None:
    """End `backend`'s session as a restart or an administrator would, and wait for it."""
    killer = create_engine(database_url)
    with killer.begin() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
    killer.dispose()
    assert wait_until(lambda: last_query_of(database_url, backend) is None)


def test_a_connection_the_server_ended_is_replaced_and_the_event_sent_again(
    client: FlaskClient, engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_full_path(monkeypatch)
    assert deliver(client, checkout()) == "processed"
    ended = kept_backend(engine)
    terminate(database_url, ended)

    assert deliver(client, subscription_updated("evt_after_drop")) == "processed"

    assert kept_backend(engine) != ended
    assert engine.pool.checkedout() == 1  # the ended one no longer counts
    assert quota(engine, ACCOUNT) == PRO


def test_when_the_replacement_fails_too_the_answer_is_503_and_nothing_is_stored(
    client: FlaskClient, engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_full_path(monkeypatch)
    assert deliver(client, checkout()) == "processed"
    terminate(database_url, kept_backend(engine))
    upgrade = subscription_updated("evt_after_drop")

    def refuse() -> None:
        raise OperationalError("SELECT 1", {}, psycopg.OperationalError("connection refused"))

    with monkeypatch.context() as patched:
        patched.setattr(engine, "raw_connection", refuse)  # the server is still down
        refused = post_event(client, upgrade)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"]
    assert quota(engine, ACCOUNT) != PRO  # nothing of it was stored

    assert deliver(client, upgrade) == "processed"  # Stripe's retry
    assert quota(engine, ACCOUNT) == PRO


def test_dispose_closes_the_kept_connection(
    client: FlaskClient, engine: Engine, database_url: str
) -> None:
    assert deliver(client, checkout()) == "processed"
    backend = kept_backend(engine)
    assert last_query_of(database_url, backend) is not None

    engine.dispose()

    assert wait_until(lambda: last_query_of(database_url, backend) is None)


def _later(clock: Callable[[], float], seconds: float) -> Callable[[], float]:
    return lambda: clock() + seconds


def test_a_connection_kept_past_the_pools_recycle_goes_back_and_is_replaced(
    client: FlaskClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert deliver(client, checkout()) == "processed"
    kept = held_connections(engine).get()
    recycle: Any = engine.pool._recycle
    # Later for this module and for the pool (which ages its connections by `time.time`).
    monkeypatch.setattr(held_connection, "monotonic", _later(time.monotonic, recycle + 1))
    monkeypatch.setattr(time, "time", _later(time.time, recycle + 1))

    assert deliver(client, subscription_updated("evt_after_recycle")) == "processed"

    replacement = held_connections(engine).get()
    assert replacement is not kept
    assert kept.closed  # given back, and the pool closed it as too old
    assert engine.pool.checkedout() == 1


def test_a_connection_kept_by_a_parent_process_is_left_to_it(
    client: FlaskClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert deliver(client, checkout()) == "processed"
    parents = held_connections(engine).get()
    monkeypatch.setattr(held_connection, "getpid", lambda: -1)  # as in a forked child

    assert deliver(client, subscription_updated("evt_in_child")) == "processed"

    assert held_connections(engine).get() is not parents
    assert not parents.closed  # the parent may still be using it


def test_a_kept_connection_found_closed_is_dropped_from_the_pool_and_replaced(
    client: FlaskClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_full_path(monkeypatch)
    assert deliver(client, checkout()) == "processed"
    closed = held_connections(engine).get()
    closed.close()

    assert deliver(client, subscription_updated("evt_after_close")) == "processed"

    assert held_connections(engine).get() is not closed
    assert engine.pool.checkedout() == 1  # the closed one no longer counts
    assert quota(engine, ACCOUNT) == PRO

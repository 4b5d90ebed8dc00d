"""A monitor polling every second from several places must not load the database: one
check's result is shared for HEALTH_CACHE_SECONDS, and requests arriving while a check
runs wait for it instead of starting their own (single flight)."""

from __future__ import annotations

import threading
import time

from sqlalchemy import create_engine, text

from .conftest import count_statements


def test_requests_within_the_interval_cost_one_round_trip(make_app):
    app = make_app(health_cache_seconds=60.0)
    statements = count_statements(app)
    client = app.test_client()

    answers = [client.get("/health") for _ in range(20)]
    answers += [client.head("/health") for _ in range(5)]

    assert {response.status_code for response in answers} == {200}
    assert statements.count == 1


def test_a_result_older_than_the_interval_is_checked_again(make_app, store_event):
    app = make_app(health_cache_seconds=0.3, health_backlog_warn=1)
    statements = count_statements(app)
    client = app.test_client()
    assert client.get("/health").get_json(force=True)["status"] == "pass"

    store_event("failed")
    # Inside the interval the shared result still stands ...
    assert client.get("/health").get_json(force=True)["status"] == "pass"
    time.sleep(0.4)
    # ... after it, a new check sees the failed event.
    assert client.get("/health").get_json(force=True)["status"] == "warn"
    assert statements.count == 2


def test_requests_during_a_slow_check_wait_for_it_instead_of_starting_their_own(
    make_app, database_url
):
    app = make_app(health_cache_seconds=60.0, health_db_timeout=10.0)
    statements = count_statements(app)
    blocker = create_engine(database_url)
    answers: list[int] = []

    def poll() -> None:
        answers.append(app.test_client().get("/health").status_code)

    with blocker.connect() as connection:
        # Holding this lock makes the check's statement wait on the server: a slow database.
        connection.execute(text("LOCK TABLE stripe_events IN ACCESS EXCLUSIVE MODE"))
        threads = [threading.Thread(target=poll) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        assert answers == []  # all of them are waiting on the one check
        connection.rollback()
    for thread in threads:
        thread.join(timeout=30)
    blocker.dispose()

    assert answers == [200] * 8
    assert statements.count == 1


def test_each_check_is_one_statement_on_one_kept_connection(make_app):
    app = make_app(health_cache_seconds=0.0)
    statements = count_statements(app)
    client = app.test_client()

    for _ in range(5):
        assert client.get("/health").status_code == 200

    assert statements.count == 5
    pool = app.extensions["health"].engine.pool
    assert pool.checkedin() == 1  # the same connection, kept between checks
    assert pool.checkedout() == 0

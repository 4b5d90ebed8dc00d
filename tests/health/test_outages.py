"""The database stopped or hanging: `/health` fails inside its time box, `/health/live`
keeps answering, and the service reports `pass` again once the database is back.

The elapsed-time bounds are behavioural (a hung worker would take the gunicorn timeout,
30 s), so they are generous: three time boxes.
"""

from __future__ import annotations

import threading
import time

import pytest

from .conftest import count_statements
from .draft import assert_health_response

TIME_BOX = 1.0  # the suite's HEALTH_DB_TIMEOUT (conftest)
BOUND = 3 * TIME_BOX

pytestmark = pytest.mark.slow


def _timed_get(client, path):
    started = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - started


def _wait_for_pass(client, within: float = 15.0):
    deadline = time.monotonic() + within
    while True:
        response = client.get("/health")
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_database_stopped_fails_fast_and_recovers_without_a_restart(proxied_app, proxy):
    client = proxied_app.test_client()
    assert client.get("/health").status_code == 200

    proxy.set_mode("refuse")
    response, elapsed = _timed_get(client, "/health")

    assert response.status_code == 503
    assert assert_health_response(response)["status"] == "fail"
    assert elapsed < BOUND
    live, _ = _timed_get(client, "/health/live")
    assert live.status_code == 200

    proxy.set_mode("forward")
    response = _wait_for_pass(client)
    assert response.status_code == 200
    assert response.get_json(force=True)["status"] == "pass"


def test_database_unreachable_from_the_start_fails_fast(proxied_app, proxy):
    proxy.set_mode("refuse")
    client = proxied_app.test_client()

    response, elapsed = _timed_get(client, "/health")

    assert response.status_code == 503
    assert elapsed < BOUND
    proxy.set_mode("forward")
    assert _wait_for_pass(client).status_code == 200


def test_database_hanging_fails_inside_the_time_box_and_recovers(proxied_app, proxy):
    client = proxied_app.test_client()
    assert client.get("/health").status_code == 200

    proxy.set_mode("blackhole")
    for _ in range(3):  # the pooled connection, a new connection, an abandoned check
        response, elapsed = _timed_get(client, "/health")
        assert response.status_code == 503
        document = assert_health_response(response)
        assert document["status"] == "fail"
        assert elapsed < BOUND
    (database,) = document["checks"]["postgresql:responseTime"]
    assert database["status"] == "fail"
    assert database["output"]
    live, elapsed = _timed_get(client, "/health/live")
    assert live.status_code == 200
    assert elapsed < BOUND

    proxy.set_mode("forward")
    response = _wait_for_pass(client)
    assert response.status_code == 200
    assert response.get_json(force=True)["status"] == "pass"


def test_a_hanging_database_costs_one_check_however_many_requests_wait(
    make_app, proxy, database_url
):
    app = make_app(database_url=proxy.url_for(database_url), health_cache_seconds=30.0)
    statements = count_statements(app)
    client = app.test_client()
    proxy.set_mode("blackhole")
    answers: list[tuple[int, float]] = []

    def poll() -> None:
        response, elapsed = _timed_get(app.test_client(), "/health")
        answers.append((response.status_code, elapsed))

    threads = [threading.Thread(target=poll) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert [code for code, _ in answers] == [503] * 8
    assert max(elapsed for _, elapsed in answers) < BOUND
    # Within the sharing interval later requests get the same answer without a new check.
    assert client.get("/health").status_code == 503
    assert statements.count <= 1
    proxy.set_mode("forward")


def test_live_never_touches_the_database(proxied_app, proxy):
    client = proxied_app.test_client()
    statements = count_statements(proxied_app)
    proxy.set_mode("refuse")

    for _ in range(5):
        assert client.get("/health/live").status_code == 200
        assert client.head("/health/live").status_code == 200

    assert statements.count == 0
    assert proxied_app.extensions["health"].engine.pool.checkedin() == 0
    assert proxied_app.extensions["engine"].pool.checkedin() == 0

"""The `/health` and `/health/live` answers: the draft's format for pass, warn and fail,
HEAD, and the thresholds that turn readings into `warn`."""

from __future__ import annotations

import json

from sqlalchemy.engine import make_url

from service.config import Settings

from .draft import assert_health_response


def _entries(document, key):
    return {entry.get("componentId"): entry for entry in document["checks"][key]}


def test_a_healthy_service_answers_pass_in_the_drafts_format(client):
    response = client.get("/health")

    assert response.status_code == 200
    document = assert_health_response(response)
    assert document["status"] == "pass"
    assert response.headers["Cache-Control"] == "no-store"
    for field in ("version", "releaseId", "serviceId", "description"):
        assert document[field], field
    assert set(document["checks"]) == {
        "postgresql:responseTime",
        "stripe-events:backlog",
        "stripe-events:lastReceived",
    }
    (database,) = document["checks"]["postgresql:responseTime"]
    assert database["componentType"] == "datastore"
    assert database["observedUnit"] == "ms"
    assert database["status"] == "pass"
    backlog = _entries(document, "stripe-events:backlog")
    assert set(backlog) == {"failed", "pending", "oldest"}
    assert backlog["failed"]["observedValue"] == 0
    assert backlog["pending"]["observedValue"] == 0
    assert backlog["oldest"]["observedValue"] is None  # nothing waiting
    (last,) = document["checks"]["stripe-events:lastReceived"]
    assert last["observedValue"] is None  # nothing received yet
    assert last["observedUnit"] == "s"


def test_the_answer_is_compact_and_starts_with_the_status_for_keyword_monitors(client):
    body = client.get("/health").get_data(as_text=True)

    assert body.startswith('{"status":"pass"')
    assert body == json.dumps(json.loads(body), separators=(",", ":"))


def test_release_id_comes_from_the_setting(make_app):
    client = make_app(release_id="2026.12.04-1").test_client()

    document = client.get("/health").get_json(force=True)

    assert document["releaseId"] == "2026.12.04-1"
    assert client.get("/health/live").get_json(force=True)["releaseId"] == "2026.12.04-1"


def test_live_answers_pass_in_the_drafts_format(client):
    response = client.get("/health/live")

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    document = assert_health_response(response)
    assert document["status"] == "pass"
    assert "checks" not in document


def test_head_answers_the_same_status_and_headers_without_a_body(client, store_event):
    for path in ("/health", "/health/live"):
        get = client.get(path)
        head = client.head(path)
        assert head.status_code == get.status_code == 200
        assert head.mimetype == "application/health+json"
        assert head.headers["Cache-Control"] == "no-store"
        assert head.get_data() == b""


def test_head_of_a_warning_service_still_answers_200(make_app, store_event):
    client = make_app(health_backlog_warn=1).test_client()
    store_event("failed")

    head = client.head("/health")

    assert head.status_code == 200
    assert head.get_data() == b""


def test_failed_events_at_the_threshold_warn_with_200(make_app, store_event):
    client = make_app(health_backlog_warn=3).test_client()
    for _ in range(2):
        store_event("failed")
    assert client.get("/health").get_json(force=True)["status"] == "pass"

    store_event("failed")
    response = client.get("/health")

    assert response.status_code == 200
    document = assert_health_response(response)
    assert document["status"] == "warn"
    backlog = _entries(document, "stripe-events:backlog")
    assert backlog["failed"]["observedValue"] == 3
    assert backlog["failed"]["observedUnit"] == "events"
    assert backlog["failed"]["status"] == "warn"
    assert backlog["failed"]["output"]
    assert backlog["pending"]["status"] == "pass"
    assert "stripe-events:backlog" in document["output"]
    assert response.get_data(as_text=True).startswith('{"status":"warn"')


def test_pending_events_at_the_threshold_warn(make_app, store_event):
    client = make_app(health_backlog_warn=2).test_client()
    store_event("pending")
    store_event("pending")

    document = assert_health_response(client.get("/health"))

    assert document["status"] == "warn"
    backlog = _entries(document, "stripe-events:backlog")
    assert backlog["pending"]["observedValue"] == 2
    assert backlog["pending"]["status"] == "warn"
    assert backlog["failed"]["status"] == "pass"


def test_counting_stops_at_the_cap_and_says_so(make_app, database_url):
    from sqlalchemy import create_engine, text

    client = make_app(health_backlog_warn=1).test_client()  # cap: 10,000
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO stripe_events (id, type, created, livemode, payload, status)"
                " SELECT 'evt_' || g, 'invoice.paid', now(), false, '{}', 'failed'"
                " FROM generate_series(1, 10050) AS g"
            )
        )
    engine.dispose()

    document = assert_health_response(client.get("/health"))

    failed = _entries(document, "stripe-events:backlog")["failed"]
    assert failed["observedValue"] == 10_000
    assert failed["status"] == "warn"
    assert "counting stopped at 10000" in failed["output"]


def test_settled_events_are_not_backlog(make_app, store_event):
    client = make_app(health_backlog_warn=1, health_oldest_warn_seconds=60).test_client()
    for status in ("processed", "ignored", "dead"):
        store_event(status, received_ago=3600)

    document = assert_health_response(client.get("/health"))

    assert document["status"] == "pass"
    backlog = _entries(document, "stripe-events:backlog")
    assert backlog["failed"]["observedValue"] == 0
    assert backlog["pending"]["observedValue"] == 0
    assert backlog["oldest"]["observedValue"] is None


def test_an_old_unsettled_event_warns_past_the_age_threshold(make_app, store_event):
    client = make_app(health_oldest_warn_seconds=600).test_client()
    store_event("pending", received_ago=300)
    assert client.get("/health").get_json(force=True)["status"] == "pass"

    store_event("failed", received_ago=1200)
    document = assert_health_response(client.get("/health"))

    assert document["status"] == "warn"
    oldest = _entries(document, "stripe-events:backlog")["oldest"]
    assert oldest["observedUnit"] == "s"
    assert 1200 <= oldest["observedValue"] < 1300
    assert oldest["status"] == "warn"


def test_an_event_stored_but_never_applied_counts_as_the_oldest(make_app, store_event):
    client = make_app(health_oldest_warn_seconds=60).test_client()
    store_event("received", received_ago=120)

    document = client.get("/health").get_json(force=True)

    assert document["status"] == "warn"
    assert _entries(document, "stripe-events:backlog")["oldest"]["observedValue"] >= 120


def test_silence_longer_than_the_threshold_warns(make_app, store_event):
    client = make_app(health_last_received_warn_seconds=600).test_client()
    store_event("processed", received_ago=3600)
    store_event("processed", received_ago=900)

    document = assert_health_response(client.get("/health"))

    assert document["status"] == "warn"
    (last,) = document["checks"]["stripe-events:lastReceived"]
    assert 900 <= last["observedValue"] < 1000
    assert last["status"] == "warn"

    store_event("processed", received_ago=5)
    document = client.get("/health").get_json(force=True)
    assert document["status"] == "pass"
    (last,) = document["checks"]["stripe-events:lastReceived"]
    assert last["observedValue"] < 600


def test_silence_never_warns_when_the_threshold_is_off(make_app, store_event):
    client = make_app(health_last_received_warn_seconds=0).test_client()
    store_event("processed", received_ago=30 * 86400)

    document = client.get("/health").get_json(force=True)

    assert document["status"] == "pass"
    (last,) = document["checks"]["stripe-events:lastReceived"]
    assert last["observedValue"] >= 30 * 86400


def test_a_failing_service_answers_fail_with_503_in_the_drafts_format(proxied_app, proxy):
    client = proxied_app.test_client()
    proxy.set_mode("refuse")

    response = client.get("/health")

    assert response.status_code == 503
    assert response.headers["Cache-Control"] == "no-store"
    document = assert_health_response(response)
    assert document["status"] == "fail"
    assert document["output"]
    (database,) = document["checks"]["postgresql:responseTime"]
    assert database["status"] == "fail"
    assert database["output"] == "database unavailable"
    # Nothing in a failing answer may read as healthy to a keyword monitor.
    assert '"status":"pass"' not in response.get_data(as_text=True)


def test_no_answer_names_the_database_or_carries_error_text(proxied_app, proxy, database_url):
    client = proxied_app.test_client()
    url = make_url(proxy.url_for(database_url))
    secrets = [url.database, str(proxy.port), "127.0.0.1", f"{url.username}@"]
    secrets += ["Traceback", "psycopg", "Error", "connection"]
    bodies = [client.get("/health").get_data(as_text=True)]
    proxy.set_mode("refuse")
    bodies.append(client.get("/health").get_data(as_text=True))
    proxy.set_mode("blackhole")
    bodies.append(client.get("/health").get_data(as_text=True))
    bodies.append(client.get("/health/live").get_data(as_text=True))
    proxy.set_mode("forward")

    for body in bodies:
        for secret in secrets:
            assert secret not in body, (secret, body)


def test_health_settings_are_read_from_the_environment():
    settings = Settings.from_env(
        {
            "STRIPE_WEBHOOK_SECRET": "whsec_x",
            "HEALTH_DB_TIMEOUT": "0.5",
            "HEALTH_CACHE_SECONDS": "5",
            "HEALTH_BACKLOG_WARN": "25",
            "HEALTH_OLDEST_WARN_SECONDS": "120",
            "HEALTH_LAST_RECEIVED_WARN_SECONDS": "3600",
            "RELEASE_ID": "v42",
        }
    )

    assert settings.health_db_timeout == 0.5
    assert settings.health_cache_seconds == 5.0
    assert settings.health_backlog_warn == 25
    assert settings.health_oldest_warn_seconds == 120.0
    assert settings.health_last_received_warn_seconds == 3600.0
    assert settings.release_id == "v42"

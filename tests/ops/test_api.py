"""The ops JSON API: every endpoint, its auth, 404 while ops is off, unknown ids."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from service import create_app

from ..helpers import make_event, post_event, store_event
from . import objects
from .conftest import OPS_TOKEN

OPS_PATHS = [
    "/ops",
    "/ops/",
    "/ops/login",
    "/ops/events",
    "/ops/static/ops.css",
    "/ops/api/accounts",
    "/ops/api/accounts/acct_1",
    "/ops/api/accounts/acct_1/history",
    "/ops/api/customers/cus_1",
    "/ops/api/events",
    "/ops/api/events/evt_1",
]


@pytest.fixture
def ops_off_client(settings):
    app = create_app(settings.replace(ops_token=None))
    yield app.test_client()
    app.extensions["engine"].dispose()


@pytest.mark.parametrize("path", OPS_PATHS)
def test_every_ops_path_is_404_without_a_configured_token(ops_off_client, path):
    response = ops_off_client.get(path, headers={"Authorization": "Bearer anything"})
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


def test_replay_is_404_without_a_configured_token(ops_off_client):
    response = ops_off_client.post("/ops/api/events/evt_1/replay")
    assert response.status_code == 404


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer wrong-token",
        f"Basic {OPS_TOKEN}",
        "Bearer",
        f"Bearer {OPS_TOKEN}x",
        "Bearer é",
    ],
)
def test_a_missing_or_wrong_token_is_401(client, seed_account, header):
    seed_account()
    headers = {"Authorization": header} if header else {}
    for path in ("/ops/api/accounts/acct_1", "/ops/api/events", "/ops/api/accounts"):
        response = client.get(path, headers=headers)
        assert response.status_code == 401
        assert response.get_json()["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.post("/ops/api/events/evt_1/replay", headers=headers).status_code == 401


def test_account_document_answers_plan_quota_source_and_subscriptions(client, auth, seed_account):
    seed_account(plan="pro")
    response = client.get("/ops/api/accounts/acct_1", headers=auth)
    assert response.status_code == 200
    document = response.get_json()
    assert {
        k: document[k] for k in ("account_id", "plan", "quota", "stripe_customer_id", "email")
    } == {
        "account_id": "acct_1",
        "plan": "pro",
        "quota": {"requests_per_minute": 30, "monthly_requests": 10_000, "source": "plan"},
        "stripe_customer_id": "cus_1",
        "email": "owner@example.com",
    }
    assert document["subscriptions"] == [
        {
            "id": "sub_acct_1",
            "status": "active",
            "plan": "pro",
            "price_id": "price_pro",
            "current_period_end": "2026-12-02T12:00:00+00:00",
            "cancel_at_period_end": False,
        }
    ]
    assert document["updated_at"] == "2026-11-03T12:00:00+00:00"
    assert document["plan_since"] == "2026-11-02T12:00:00+00:00"
    assert document["override"] is None
    assert document["last_change"] == {
        "at": "2026-11-02T12:00:00+00:00",
        "cause": {"event_id": "evt_acct_1_upgrade"},
    }
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_account_with_an_override_names_it_as_the_source(client, auth, seed_account):
    seed_account(plan="scale", override=(500, 5_000_000))
    document = client.get("/ops/api/accounts/acct_1", headers=auth).get_json()
    assert document["quota"] == {
        "requests_per_minute": 500,
        "monthly_requests": 5_000_000,
        "source": "override",
    }
    assert document["override"]["set_by"] == "alice"
    assert document["override"]["reason"] == "enterprise deal"
    assert document["last_change"]["cause"] == {"ops_action": "quota set by alice: enterprise deal"}
    # The plan itself still comes from the Stripe event that upgraded the account.
    assert document["plan_change"] == {
        "at": "2026-11-02T12:00:00+00:00",
        "plan_before": "free",
        "cause": {"event_id": "evt_acct_1_upgrade"},
    }


def test_customer_document_is_the_linked_accounts(client, auth, seed_account):
    seed_account()
    by_customer = client.get("/ops/api/customers/cus_1", headers=auth)
    by_account = client.get("/ops/api/accounts/acct_1", headers=auth)
    assert by_customer.status_code == 200
    assert by_customer.get_json() == by_account.get_json()


@pytest.mark.parametrize(
    "path",
    [
        "/ops/api/accounts/acct_missing",
        "/ops/api/accounts/acct_missing/history",
        "/ops/api/customers/cus_missing",
        "/ops/api/events/evt_missing",
    ],
)
def test_unknown_ids_are_404_json(client, auth, path):
    response = client.get(path, headers=auth)
    assert response.status_code == 404
    body = response.get_json()
    assert body["error"] == "not_found"
    assert "missing" in body["message"]


def test_replaying_an_unknown_event_is_404(client, auth):
    response = client.post("/ops/api/events/evt_missing/replay", headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


def test_accounts_list_pages_with_a_cursor_and_filters(client, auth, seed_account):
    seed_account("acct_a", plan="pro", customer_id="cus_a")
    seed_account("acct_b", plan="scale", customer_id="cus_b", subscription_status="past_due")
    seed_account("acct_c", plan="pro", customer_id="cus_c")
    first = client.get("/ops/api/accounts?limit=2", headers=auth).get_json()
    assert [a["account_id"] for a in first["accounts"]] == ["acct_a", "acct_b"]
    assert first["next_cursor"]
    second = client.get(
        f"/ops/api/accounts?limit=2&cursor={first['next_cursor']}", headers=auth
    ).get_json()
    assert [a["account_id"] for a in second["accounts"]] == ["acct_c"]
    assert second["next_cursor"] is None
    pro = client.get("/ops/api/accounts?plan=pro", headers=auth).get_json()
    assert [a["account_id"] for a in pro["accounts"]] == ["acct_a", "acct_c"]
    past_due = client.get("/ops/api/accounts?status=past_due", headers=auth).get_json()
    assert [a["account_id"] for a in past_due["accounts"]] == ["acct_b"]
    assert pro["accounts"][0]["quota"] == {
        "requests_per_minute": 30,
        "monthly_requests": 10_000,
        "source": "plan",
    }


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("plan=gold", "invalid_parameter"),
        ("status=happy", "invalid_parameter"),
        ("limit=0", "invalid_parameter"),
        ("limit=abc", "invalid_parameter"),
        ("limit=100000", "invalid_parameter"),
        ("cursor=not-a-cursor", "invalid_cursor"),
        ("cursor=WyJhIiwiYiJd", "invalid_cursor"),
    ],
)
def test_bad_list_parameters_are_400_json(client, auth, query, error):
    response = client.get(f"/ops/api/accounts?{query}", headers=auth)
    assert response.status_code == 400
    assert response.get_json()["error"] == error


def test_history_is_newest_first_and_names_each_cause(client, auth, seed_account):
    seed_account(plan="scale", override=(500, 5_000_000))
    response = client.get("/ops/api/accounts/acct_1/history", headers=auth)
    assert response.status_code == 200
    document = response.get_json()
    assert document["account_id"] == "acct_1"
    assert [e["at"] for e in document["entries"]] == [
        "2026-11-03T12:00:00+00:00",
        "2026-11-02T12:00:00+00:00",
    ]
    newest, oldest = document["entries"]
    assert newest["cause"] == {"ops_action": "quota set by alice: enterprise deal"}
    assert newest["quota_before"] == {
        "requests_per_minute": 60,
        "monthly_requests": 100_000,
        "source": "plan",
    }
    assert newest["quota_after"] == {
        "requests_per_minute": 500,
        "monthly_requests": 5_000_000,
        "source": "override",
    }
    assert (oldest["plan_before"], oldest["plan_after"]) == ("free", "scale")
    assert oldest["cause"] == {"event_id": "evt_acct_1_upgrade"}


def test_events_list_filters_and_pages_newest_first(client, auth, engine):
    ids = []
    for n in range(5):
        event = make_event(
            "invoice.paid" if n % 2 else "customer.updated",
            {"object": "invoice" if n % 2 else "customer", "id": f"obj_{n}", "customer": "cus_9"},
            event_id=f"evt_{n}",
        )
        ids.append(
            store_event(
                engine,
                event,
                status="failed" if n == 4 else "processed",
                account_id="acct_9" if n == 2 else None,
                received_at=f"2026-11-0{n + 1}T00:00:00Z",
            )
        )
    page = client.get("/ops/api/events?limit=2", headers=auth).get_json()
    assert [e["id"] for e in page["events"]] == ["evt_4", "evt_3"]
    rest = []
    cursor = page["next_cursor"]
    while cursor:
        more = client.get(f"/ops/api/events?limit=2&cursor={cursor}", headers=auth).get_json()
        rest += [e["id"] for e in more["events"]]
        cursor = more["next_cursor"]
    assert rest == ["evt_2", "evt_1", "evt_0"]
    failed = client.get("/ops/api/events?status=failed", headers=auth).get_json()
    assert [e["id"] for e in failed["events"]] == ["evt_4"]
    paid = client.get("/ops/api/events?type=invoice.paid", headers=auth).get_json()
    assert [e["id"] for e in paid["events"]] == ["evt_3", "evt_1"]
    assert client.get("/ops/api/events?customer=cus_9", headers=auth).get_json()["events"]
    assert client.get("/ops/api/events?customer=cus_0", headers=auth).get_json()["events"] == []
    by_account = client.get("/ops/api/events?account=acct_9", headers=auth).get_json()
    assert [e["id"] for e in by_account["events"]] == ["evt_2"]
    bad = client.get("/ops/api/events?status=exploded", headers=auth)
    assert bad.status_code == 400
    assert bad.get_json()["error"] == "invalid_parameter"


def test_event_document_has_the_spec_fields(client, auth):
    event = make_event(
        "customer.subscription.updated",
        {"object": "subscription", "id": "sub_1", "customer": "cus_1"},
        created=1_764_000_000,
    )
    assert post_event(client, event).status_code == 200
    response = client.get(f"/ops/api/events/{event['id']}", headers=auth)
    assert response.status_code == 200
    document = response.get_json()
    assert set(document) == {
        "id",
        "type",
        "status",
        "created",
        "received_at",
        "attempts",
        "last_error",
        "customer_id",
        "account_id",
    }
    assert document["id"] == event["id"]
    assert document["type"] == "customer.subscription.updated"
    assert document["created"] == "2025-11-24T16:00:00+00:00"
    assert document["customer_id"] == "cus_1"
    assert document["attempts"] == 1


def test_replay_processes_a_failed_event_again_and_answers_its_document(client, auth, engine):
    # An event of a type nothing handles settles as `ignored` on the same path a
    # delivery takes, whatever failed before.
    event = make_event("product.created", {"object": "product", "id": "prod_1"})
    store_event(engine, event, status="failed", attempts=2, last_error="RuntimeError: boom")
    response = client.post(f"/ops/api/events/{event['id']}/replay", headers=auth)
    assert response.status_code == 200
    document = response.get_json()
    assert document["id"] == event["id"]
    assert document["status"] == "ignored"
    assert document["attempts"] == 3
    assert document["last_error"] is None
    with engine.connect() as connection:
        status = connection.execute(
            text("SELECT status FROM stripe_events WHERE id = :id"), {"id": event["id"]}
        ).scalar_one()
    assert status == "ignored"


def test_api_responses_carry_security_headers(client, auth):
    response = client.get("/ops/api/events", headers=auth)
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_a_database_that_does_not_answer_is_503_not_500(settings, auth):
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:9/nowhere"
    app = create_app(settings.replace(database_url=unreachable, database_timeout=1.0))
    try:
        client = app.test_client()
        for path in ("/ops/api/accounts/acct_1", "/ops/api/events"):
            response = client.get(path, headers=auth)
            assert response.status_code == 503
            assert response.get_json()["error"] == "database_unavailable"
            assert response.headers["Retry-After"] == "5"
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert "stripe_events_backlog_scrape_ok 0.0" in metrics.get_data(as_text=True)
    finally:
        app.extensions["engine"].dispose()


def test_replaying_an_applied_event_changes_nothing(client, auth, engine):
    checkout = objects.checkout_completed("acct_5", "cus_5", "five@example.com")
    post_event(client, make_event("checkout.session.completed", checkout))
    sub = objects.subscription("sub_5", "cus_5", price_obj=objects.price("price_pro", "pro"))
    event = make_event("customer.subscription.updated", sub)
    assert post_event(client, event).get_json()["status"] == "processed"
    before = client.get("/ops/api/accounts/acct_5", headers=auth).get_json()
    history = client.get("/ops/api/accounts/acct_5/history", headers=auth).get_json()

    response = client.post(f"/ops/api/events/{event['id']}/replay", headers=auth)
    assert response.status_code == 200
    assert response.get_json()["status"] == "processed"
    assert response.get_json()["attempts"] == 2
    assert client.get("/ops/api/accounts/acct_5", headers=auth).get_json() == before
    assert client.get("/ops/api/accounts/acct_5/history", headers=auth).get_json() == history
    assert before["plan"] == "pro"

"""The ops page: in a real browser (headless Chromium from Debian's `chromium` package)
and, for what a browser hides (cookie flags, headers, CSRF), through the test client.

Screenshots land in test-artifacts/ops/ (git-ignored) for people to look at.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from werkzeug.serving import make_server

from service import create_app

from ..helpers import make_event, post_event
from . import objects
from .conftest import OPS_TOKEN

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "ops"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _login(client, token=OPS_TOKEN):
    page = client.get("/ops/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    return client.post("/ops/login", data={"token": token, "csrf_token": csrf})


def test_the_page_redirects_to_login_and_sets_a_safe_cookie(client, seed_account):
    seed_account()
    first = client.get("/ops/accounts/acct_1")
    assert first.status_code == 302
    assert first.headers["Location"].startswith("/ops/login?next=/ops/accounts/acct_1")
    wrong = _login(client, "not-the-token")
    assert wrong.status_code == 401
    assert "not the ops token" in wrong.get_data(as_text=True)
    right = _login(client)
    assert right.status_code == 302
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/ops" in cookie
    assert OPS_TOKEN not in cookie
    page = client.get("/ops/accounts/acct_1")
    assert page.status_code == 200
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    csp = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src" not in csp  # default-src 'none': no script at all
    assert "default-src 'none'" in csp


def test_the_cookie_is_secure_behind_https(client):
    page = client.get("/ops/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in page.headers["Set-Cookie"]


def test_login_does_not_redirect_off_site(client):
    page = client.get("/ops/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    response = client.post(
        "/ops/login?next=//evil.example/", data={"token": OPS_TOKEN, "csrf_token": csrf}
    )
    assert response.headers["Location"] == "/ops"


def test_replay_without_the_csrf_token_is_refused(client, engine):
    event = make_event("product.created", {"object": "product", "id": "prod_1"})
    post_event(client, event)
    _login(client)
    response = client.post(f"/ops/events/{event['id']}/replay", data={})
    assert response.status_code == 400
    with engine.connect() as connection:
        attempts = connection.execute(
            text("SELECT attempts FROM stripe_events WHERE id = :id"), {"id": event["id"]}
        ).scalar_one()
    assert attempts == 1


def test_a_session_is_accepted_by_every_worker_without_a_secret_key(client, settings, seed_account):
    # No SECRET_KEY: each process derives the same cookie key from OPS_TOKEN.
    seed_account()
    assert settings.secret_key is None
    _login(client)
    other_worker = create_app(settings)
    try:
        other = other_worker.test_client()
        other.set_cookie(
            "ops_session", client.get_cookie("ops_session", path="/ops").value, path="/ops"
        )
        assert other.get("/ops/accounts/acct_1").status_code == 200
    finally:
        other_worker.extensions["engine"].dispose()


def test_a_session_from_another_token_is_not_accepted(settings, seed_account):
    # Same cookie key on both sides, so only the token fingerprint in the session differs.
    seed_account()
    before = create_app(settings.replace(secret_key="fixed-key"))
    rotated = create_app(settings.replace(ops_token="a-new-token", secret_key="fixed-key"))
    try:
        client = before.test_client()
        _login(client)
        assert client.get("/ops/accounts/acct_1").status_code == 200
        other = rotated.test_client()
        other.set_cookie(
            "ops_session", client.get_cookie("ops_session", path="/ops").value, path="/ops"
        )
        assert other.get("/ops/accounts/acct_1").status_code == 302
    finally:
        before.extensions["engine"].dispose()
        rotated.extensions["engine"].dispose()


# -- in the browser ----------------------------------------------------------------------


@pytest.fixture
def failing_event(app, settings, engine) -> str:
    """acct_42 linked to cus_42 and a subscription event failing on an unmapped price."""
    unmapped = create_app(settings.replace(plan_price_map={}))
    client = unmapped.test_client()
    checkout = objects.checkout_completed("acct_42", "cus_42", "buyer@example.com")
    post_event(client, make_event("checkout.session.completed", checkout, created=1_764_000_000))
    sub = objects.subscription(
        "sub_42", "cus_42", price_obj=objects.price("price_mystery"), created=1_764_000_100
    )
    event = make_event("customer.subscription.updated", sub, created=1_764_000_100)
    assert post_event(client, event).get_json()["status"] == "failed"
    unmapped.extensions["engine"].dispose()
    return str(event["id"])


@pytest.fixture
def live_server(settings) -> Iterator[str]:
    """The app, with the price mapping ops added to fix the failure, on a real socket."""
    app = create_app(settings.replace(plan_price_map={"price_mystery": "scale"}))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)
    app.extensions["engine"].dispose()


@pytest.fixture
def browser_page(live_server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(10_000)
        yield page
        context.close()
        browser.close()


def test_an_ops_engineer_logs_in_finds_an_account_and_replays_a_failed_event(
    live_server, browser_page, seed_account, failing_event, engine
):
    page = browser_page
    seed_account("acct_1", plan="scale", override=(500, 5_000_000), invoice_failed=True)

    page.goto(f"{live_server}/ops/accounts/acct_1")
    assert "/ops/login" in page.url
    page.screenshot(path=str(ARTIFACTS / "01-login.png"), full_page=True)
    page.fill("input[name=token]", "wrong")
    page.click("button[type=submit]")
    assert page.locator(".flash-problem").inner_text() == "That token is not the ops token."
    page.fill("input[name=token]", OPS_TOKEN)
    page.click("button[type=submit]")
    # Back where the engineer was going, and the answer is on the first screen.
    assert page.url.endswith("/ops/accounts/acct_1")
    facts = page.locator(".facts").inner_text().lower()
    assert "scale" in facts
    assert "500 req/min · 5,000,000 req/month" in facts
    assert "ops override" in facts
    assert "set by alice" in facts
    assert "quota set by alice: enterprise deal" in facts
    failed_invoice = page.locator("tr.row-problem", has_text="in_acct_1")
    assert "payment failed" in failed_invoice.inner_text()
    assert "free → scale" in page.locator("section", has_text="Audit trail").inner_text()
    page.screenshot(path=str(ARTIFACTS / "02-account-with-override.png"), full_page=True)

    # Search by email finds the account linked through checkout.
    page.fill("input[name=q]", "BUYER@example.com")
    page.press("input[name=q]", "Enter")
    assert page.url.endswith("/ops/accounts/acct_42")
    assert "free" in page.locator(".facts").inner_text().lower()
    timeline = page.locator("section", has_text="Event timeline")
    assert "UnknownPrice" in timeline.inner_text()
    page.screenshot(path=str(ARTIFACTS / "03-account-with-failed-event.png"), full_page=True)

    # Search by customer id, then by something unknown.
    page.fill("input[name=q]", "cus_1")
    page.press("input[name=q]", "Enter")
    assert page.url.endswith("/ops/accounts/acct_1")
    page.fill("input[name=q]", "nobody@example.com")
    page.press("input[name=q]", "Enter")
    assert "No account has that id" in page.content()

    # The failed-events list, and the replay button.
    page.click("text=Failed events")
    row = page.locator("tr", has_text=failing_event)
    assert "failed" in row.inner_text()
    page.screenshot(path=str(ARTIFACTS / "04-failed-events.png"), full_page=True)
    row.locator("button", has_text="Replay").click()
    flash = page.locator(".flash-ok").inner_text()
    assert flash == f"Replayed {failing_event}: failed → processed"
    assert failing_event not in page.locator("table").all_inner_texts().__str__()
    page.screenshot(path=str(ARTIFACTS / "05-after-replay.png"), full_page=True)

    with engine.connect() as connection:
        plan = connection.execute(text("SELECT plan FROM accounts WHERE id = 'acct_42'")).scalar()
    assert plan == "scale"
    page.goto(f"{live_server}/ops/accounts/acct_42")
    facts = page.locator(".facts").inner_text().lower()
    assert "scale" in facts
    assert failing_event in facts  # the "why": the replayed event caused the change
    page.screenshot(path=str(ARTIFACTS / "06-account-after-replay.png"), full_page=True)

    page.goto(f"{live_server}/ops/events/{failing_event}")
    assert "processed" in page.locator("dl.grid").inner_text()
    page.screenshot(path=str(ARTIFACTS / "07-event.png"), full_page=True)

    page.click("text=Billing ops")
    assert (
        "No failed events." in page.locator("section", has_text="Newest failed events").inner_text()
    )
    page.screenshot(path=str(ARTIFACTS / "08-overview.png"), full_page=True)
    page.click("text=Log out")
    assert "/ops/login" in page.url
    page.goto(f"{live_server}/ops/accounts/acct_1")
    assert "/ops/login" in page.url

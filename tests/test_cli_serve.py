"""`webhooks db upgrade` and `webhooks serve`: the commands a release and a web dyno run."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from service.cli import cli

from .helpers import TEST_SECRET, make_event, signed_headers


def test_db_upgrade_migrates_to_head_and_is_repeatable(app, engine):
    runner = app.test_cli_runner()
    for _ in range(2):
        result = runner.invoke(cli, ["db", "upgrade"])
        assert result.exit_code == 0, result.output
        assert "database at head" in result.output
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    assert len(versions) == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_serve_runs_gunicorn_that_stores_a_signed_event(database_url, engine):
    port = _free_port()
    env = {
        **os.environ,
        "STRIPE_WEBHOOK_SECRET": TEST_SECRET,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
    }
    script = Path(sys.executable).with_name("webhooks")
    server = subprocess.Popen(
        [str(script), "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )

    def call(method: str, path: str, body: bytes | None = None, headers=None):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    try:
        for _ in range(300):
            try:
                if call("GET", "/health/live")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("webhooks serve did not start")
        event = make_event("test.cli.unknown", {"object": "thing", "id": "x"})
        body = json.dumps(event).encode()
        status, answer = call("POST", "/webhooks/stripe", body, signed_headers(body))
        assert status == 200
        assert json.loads(answer)["id"] == event["id"]
        assert call("GET", "/webhooks/stripe")[0] == 405
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT id FROM stripe_events")).scalars().all()
    assert stored == [event["id"]]

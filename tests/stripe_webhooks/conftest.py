"""Fixtures for the Stripe endpoint: a real HTTP server and a cuttable database path."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from werkzeug.serving import make_server

from service import create_app
from service.config import Settings

from ..helpers import TEST_SECRET
from ..tcp_proxy import TcpProxy


def serve_in_thread(app: Flask) -> Iterator[str]:
    """Serve `app` with werkzeug's threaded server; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """The application behind a real TCP socket, so requests run concurrently."""
    yield from serve_in_thread(app)


@pytest.fixture
def gunicorn_server(database_url: str) -> Iterator[str]:
    """The service under gunicorn with 4 worker processes; yield its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "STRIPE_WEBHOOK_SECRET": TEST_SECRET,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "gunicorn", "service:create_app()", "--workers", "4"]
    server = subprocess.Popen(
        [*command, "--bind", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("gunicorn did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.fixture
def proxy(database_url: str) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the test database whose path the test can cut."""
    tcp_proxy = TcpProxy(database_url)
    yield tcp_proxy
    tcp_proxy.close()


@pytest.fixture
def proxied_settings(settings: Settings, proxy: TcpProxy, database_url: str) -> Settings:
    """The test settings with the database reached through `proxy`, 1 s timeouts."""
    return settings.replace(database_url=proxy.url_for(database_url), database_timeout=1.0)


@pytest.fixture
def proxied_app(proxied_settings: Settings) -> Iterator[Flask]:
    app = create_app(proxied_settings)
    app.config["TESTING"] = True
    yield app
    app.extensions["engine"].dispose()

"""Fixtures for the Stripe endpoint: a real HTTP server and a cuttable database path."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from flask import Flask
from werkzeug.serving import make_server

from service import create_app
from service.config import Settings

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

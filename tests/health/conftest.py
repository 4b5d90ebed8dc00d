"""Fixtures for the health tests: apps built with chosen health settings, a cuttable path
to the database (tests/tcp_proxy.py), a counter of the statements the checks send, and a
way to put events of a given status and age into the table."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, event, text

from service import create_app
from service.config import Settings

from ..tcp_proxy import TcpProxy

MakeApp = Callable[..., Flask]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Every health test decides its own sharing interval; by default nothing is shared."""
    return settings.replace(health_cache_seconds=0.0, health_db_timeout=1.0)


@pytest.fixture
def make_app(settings: Settings) -> Iterator[MakeApp]:
    """Build applications with some settings changed; their engines are disposed after."""
    apps: list[Flask] = []

    def make(**changes: Any) -> Flask:
        app = create_app(settings.replace(**changes))
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["health"].dispose()
        app.extensions["engine"].dispose()


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    return make_app()


@pytest.fixture
def proxy(database_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy(database_url)
    yield proxy
    proxy.close()


@pytest.fixture
def proxied_app(make_app: MakeApp, proxy: TcpProxy, database_url: str) -> Flask:
    """An application whose every database connection goes through `proxy`."""
    return make_app(database_url=proxy.url_for(database_url))


class StatementCounter:
    """Counts the statements an engine sends, from any thread."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *args: Any) -> None:
        with self._lock:
            self.count += 1


def count_statements(app: Flask) -> StatementCounter:
    """A counter of the statements the health checks of `app` send to the database."""
    return StatementCounter(app.extensions["health"].engine)


@pytest.fixture
def store_event(database_url: str) -> Iterator[Callable[..., str]]:
    """Insert an event with a given status, received `received_ago` seconds ago."""
    from sqlalchemy import create_engine

    engine = create_engine(database_url)

    def store(status: str, received_ago: float = 0.0) -> str:
        event_id = f"evt_{uuid.uuid4().hex[:24]}"
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO stripe_events (id, type, created, livemode, payload,"
                    " received_at, status)"
                    " VALUES (:id, 'invoice.paid', now(), false, '{}',"
                    " now() - make_interval(secs => :ago), :status)"
                ),
                {"id": event_id, "ago": received_ago, "status": status},
            )
        return event_id

    yield store
    engine.dispose()

"""Fixtures shared by the suite: a real PostgreSQL database per test run, built with
`alembic upgrade head`, and an application configured against it.

`TEST_DATABASE_URL` names a server to use (for example postgresql://postgres@127.0.0.1/postgres);
without it the embedded PostgreSQL under ./var/ is started. Each run creates its own
database and drops it at the end. Tables are emptied before each test, the seeded
catalogue excepted, because the code under test commits as production does.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from service import create_app
from service.config import Settings, normalize_database_url
from service.migrate import upgrade

from .helpers import TEST_SECRET
from .stripe_double import StripeDouble

# Tables a migration seeds and tests only read.
SEEDED_TABLES = frozenset({"alembic_version", "plans"})
ROOT = Path(__file__).resolve().parent.parent


def _server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return normalize_database_url(url)
    from service.embedded_db import embedded_server_url

    return embedded_server_url(ROOT / "var" / "test-postgres")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database on the test server, migrated to head, dropped after the run."""
    server_url = make_url(_server_url())
    name = f"webhooks_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server_url.set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        stripe_webhook_secrets=(TEST_SECRET,),
        database_url=database_url,
        database_timeout=3.0,
        log_level="WARNING",
    )


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    app.config["TESTING"] = True
    yield app
    app.extensions["engine"].dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def engine(app: Flask) -> Engine:
    """The application's own engine, for asserting what it stored."""
    engine: Engine = app.extensions["engine"]
    return engine


@pytest.fixture
def stripe_double() -> Iterator[StripeDouble]:
    """A running local double of the Stripe API (tests/stripe_double.py)."""
    with StripeDouble() as double:
        yield double


@pytest.fixture(autouse=True)
def _empty_tables(request: pytest.FixtureRequest) -> None:
    """Start every database test from empty tables (the seeded catalogue kept)."""
    if "database_url" not in request.fixturenames:
        return
    url = request.getfixturevalue("database_url")
    engine = create_engine(url)
    with engine.begin() as connection:
        tables = connection.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).scalars()
        names = [f'"{t}"' for t in tables if t not in SEEDED_TABLES]
        if names:
            connection.execute(text(f"TRUNCATE {', '.join(names)} CASCADE"))
    engine.dispose()

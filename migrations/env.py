"""Alembic environment: migrate the database the service is configured for.

The connection comes from `service.migrate` when the service runs the migration (under
its advisory lock); from `DATABASE_URL` when `alembic` is run by hand.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

from service.config import normalize_database_url
from service.db import Base

target_metadata = Base.metadata


def _url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return normalize_database_url(url)
    from service.embedded_db import embedded_server_url

    return embedded_server_url()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()

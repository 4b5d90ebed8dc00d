"""The database layer: declarative base, engine construction and the transaction scope.

Nothing here runs at import time; `create_app` and the CLI build the engine from settings.
Domain code takes a `Session` and never commits: the edge (a view, a CLI command, the
worker) opens the transaction with `transaction()` and owns its outcome.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, MetaData, create_engine
from sqlalchemy.orm import DeclarativeBase, Session

from . import db_watchdog
from .config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of every mapped class; constraint names follow one convention for Alembic."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def make_engine(url: str, settings: Settings) -> Engine:
    """An engine whose connections give up instead of hanging a worker.

    `connect_timeout` bounds reaching the server; `statement_timeout` bounds a query the
    server is running; TCP keepalives notice a peer that went away silently; the watchdog
    (service/db_watchdog.py) ends a call to a server that is there but never answers.
    """
    timeout_ms = int(settings.database_timeout * 1000)
    engine = create_engine(
        url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_timeout=settings.database_timeout,
        pool_recycle=1800,
        connect_args={
            "connect_timeout": max(1, math.ceil(settings.database_timeout)),
            "options": f"-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}",
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
            "tcp_user_timeout": timeout_ms,
            "application_name": "billing-webhooks",
        },
    )
    # A server that holds the connection open but never answers defeats all of the above.
    db_watchdog.install(engine, settings.database_timeout)
    return engine


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit when the block ends, roll back when it raises."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session

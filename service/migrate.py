"""Running Alembic migrations from the service, one release at a time.

Two releases starting together must not migrate at once: the upgrade runs while holding a
PostgreSQL advisory lock, so the second waits and then finds nothing left to do.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# An arbitrary, fixed key: every process of this service agrees on it.
MIGRATION_LOCK_KEY = 7_311_202_601


def alembic_config(engine: Engine | None = None) -> Config:
    """An Alembic configuration that needs no alembic.ini and reuses `engine` when given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision`, holding the migration advisory lock meanwhile."""
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        try:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            connection.commit()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()

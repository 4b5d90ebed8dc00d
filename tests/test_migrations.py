"""The migrations build exactly the schema the models declare, so neither drifts alone."""

from __future__ import annotations

import warnings

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

import service.billing.models
import service.stripe_webhooks.models  # noqa: F401 - registers the tables on Base.metadata
from service.db import Base


def test_the_migrated_database_matches_the_models(database_url):
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection, warnings.catch_warnings():
            # Alembic warns that it compares expression indexes by their text only.
            warnings.simplefilter("ignore")
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []

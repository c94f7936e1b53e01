"""The platform's Alembic migrations produce exactly the models' schema (SQLite and PostgreSQL)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from incisive.platform.home import Platform
from incisive.platform.models import Base


def test_migrations_match_models(platform: Platform) -> None:
    with platform.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    platform.db.check_current()

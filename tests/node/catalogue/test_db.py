from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from incisive.common.db import safe_url
from incisive.common.errors import CatalogueUnavailable, ConfigError
from incisive.node.catalogue import Base, Catalogue
from incisive.node.home import Node


def test_migrations_match_the_models(catalogue_url: str) -> None:
    catalogue = Catalogue(catalogue_url)
    catalogue.migrate()
    with catalogue.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    catalogue.dispose()
    assert diff == []


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'c.db'}")
    catalogue.migrate()
    with catalogue.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_unreachable_catalogue_names_url_without_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg://alice:s3cr3t-pw@127.0.0.1:1/nodb"
    with pytest.raises(CatalogueUnavailable) as err:
        Node.init(tmp_path / "n", provider="A", catalogue_url=url)
    message = str(err.value)
    assert "127.0.0.1:1/nodb" in message and "alice" in message
    assert "s3cr3t-pw" not in message
    assert not (tmp_path / "n").exists()  # nothing half-created
    assert "s3cr3t" not in safe_url(url)


def test_invalid_url_and_outdated_schema(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a valid SQLAlchemy URL"):
        Catalogue("no-such-scheme:::")
    fresh = Catalogue(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(ConfigError, match="run 'incisive node migrate'"):
        fresh.check_current()


def test_node_init_refuses_existing_node(sqlite_node: Node) -> None:
    with pytest.raises(ConfigError, match="already an incisive node"):
        Node.init(sqlite_node.home, provider="Again")
    with pytest.raises(ConfigError, match="provider"):
        Node.init(sqlite_node.home.parent / "other", provider="  ")

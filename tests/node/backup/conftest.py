"""Fixtures for backup tests: an imported node on both catalogue backends, an empty catalogue to restore into."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from incisive.node.home import Node
from tests.node.backup.helpers import import_cohort


@pytest.fixture
def loaded(node: Node, cohort: Path) -> Node:
    import_cohort(node, cohort / "dicom")
    return node


@pytest.fixture
def restore_url(catalogue_url: str) -> Iterator[str]:
    """Where a restore puts the catalogue: '' (SQLite in the new node dir) or a fresh empty PostgreSQL db."""
    if catalogue_url.startswith("sqlite"):
        yield ""
        return
    name = f"incisive_r_{secrets.token_hex(6)}"
    admin = create_engine(catalogue_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(catalogue_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()

"""Shared fixtures: catalogue URLs for SQLite *and* PostgreSQL, fresh nodes, a synthetic cohort."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from incisive.demo.synth import CohortSpec, generate_cohort
from incisive.node.home import Node

PG_URL = os.environ.get("INCISIVE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_available() -> bool:
    try:
        with create_engine(PG_URL, connect_args={"connect_timeout": 3}).connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_available() -> bool:
    ok = _pg_available()
    if not ok and os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI but {make_url(PG_URL).render_as_string()} is unreachable")
    return ok


@contextlib.contextmanager
def temp_pg_database() -> Iterator[str]:
    """A throw-away PostgreSQL database (its URL); dropped afterwards."""
    name = f"incisive_t_{secrets.token_hex(6)}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
            ), {"n": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def pg_database(pg_available: bool) -> Iterator[str]:
    """A throw-away PostgreSQL database; dropped afterwards."""
    if not pg_available:
        pytest.skip("PostgreSQL not reachable")
    with temp_pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catalogue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every catalogue test runs twice: embedded SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalogue.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture
def node(tmp_path: Path, catalogue_url: str) -> Iterator[Node]:
    n = Node.init(tmp_path / "node", provider="Test Hospital", catalogue_url=catalogue_url)
    yield n
    n.catalogue.dispose()


@pytest.fixture
def sqlite_node(tmp_path: Path) -> Iterator[Node]:
    """A node on SQLite only, for tests that are not about the catalogue backend."""
    n = Node.init(tmp_path / "node", provider="Test Hospital")
    yield n
    n.catalogue.dispose()


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic cohort (DICOM + clinical CSV + PHI manifest), generated once per session."""
    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(out, CohortSpec(patients=10, seed=11, size=32, ct_slices=4, mr_slices=3))
    return out

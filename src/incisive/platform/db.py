"""Platform database: engine (SQLite WAL or PostgreSQL, shared set-up with the node catalogue), Alembic, sessions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from incisive.common.errors import CatalogueUnavailable, ConfigError
from incisive.node.catalogue.db import make_engine, safe_url

MIGRATIONS = "incisive.platform:migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    return cfg


def _sqlite_normal_sync(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class PlatformDb:
    """SQLite runs in WAL mode with ``synchronous=NORMAL`` here (the node catalogue keeps FULL): a commit survives
    a crash of the process, and a power cut can lose only the last commits (nonces, heartbeats, the latest job
    states), never corrupt the file. The many small commits of the agent link would otherwise cost an fsync each."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_normal_sync)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> None:
        cfg = alembic_config()
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except OperationalError as exc:
            raise CatalogueUnavailable(self._unavailable(exc)) from None

    def check_current(self) -> None:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        try:
            with self.engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
        except OperationalError as exc:
            raise CatalogueUnavailable(self._unavailable(exc)) from None
        if current != head:
            raise ConfigError(f"platform database at {safe_url(self.url)} is at schema revision {current}, "
                              f"expected {head}; run 'incisive platform migrate'")

    def _unavailable(self, exc: OperationalError) -> str:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
        return f"cannot open the platform database at {safe_url(self.url)}: {reason}"

    @contextmanager
    def session(self) -> Iterator[Session]:
        try:
            with self._sessions() as session, session.begin():
                yield session
        except OperationalError as exc:
            raise CatalogueUnavailable(self._unavailable(exc)) from None

    def dispose(self) -> None:
        self.engine.dispose()

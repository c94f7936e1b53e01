"""One database module for node and platform: engine set-up (SQLite WAL or PostgreSQL), Alembic migrations,
sessions. The node catalogue (:class:`incisive.node.catalogue.db.Catalogue`) and the platform database
(:class:`incisive.platform.db.PlatformDb`) subclass :class:`Database` with their own migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from incisive.common.errors import CatalogueUnavailable, ConfigError


def safe_url(url: str) -> str:
    """The URL as it may be shown: never with its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL with ``synchronous=NORMAL``: a commit is atomic and survives a crash of the process (``kill -9``);
    only a power cut or kernel crash can roll back the last commits, because the WAL is fsynced at checkpoint
    rather than at every commit (``FULL`` costs one more journal flush per C-STORE on this path).

    That loss is repairable, and nothing else about durability changes: an object is fsynced (file and
    directory entry) *before* its row is written, so a row lost to a power cut leaves an object with no row.
    ``serve`` finds its pid marker after any unclean stop and runs ``fsck --repair``, which re-catalogues such
    orphans when they are our de-identified instances (``tests/node/test_fsck.py``,
    ``tests/node/net/test_scp.py::test_power_loss_rows_are_recatalogued``). Rows never point at missing bytes.
    PostgreSQL catalogues keep the server's own ``synchronous_commit``. See docs/dicom-network.md.
    """
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"database URL is not a valid SQLAlchemy URL: {safe_url(url)}") from None
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        connect_args = {"connect_timeout": 10} if parsed.get_backend_name() == "postgresql" else {}
        engine = create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    return engine


def alembic_config(location: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", location)
    return cfg


class Database:
    """Owns the engine and hands out sessions; ``migrate()`` brings the schema to the latest revision.

    A subclass names its Alembic ``migrations`` (``package:directory``), what it is called in messages and the
    command that migrates it.
    """

    migrations: str
    what: str
    migrate_command: str

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> None:
        cfg = alembic_config(self.migrations)
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except OperationalError as exc:
            raise CatalogueUnavailable(self._unavailable(exc)) from None

    def check_current(self) -> None:
        """Raise a clear error if the database is unreachable or not at the latest schema revision."""
        head = ScriptDirectory.from_config(alembic_config(self.migrations)).get_current_head()
        try:
            with self.engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
        except OperationalError as exc:
            raise CatalogueUnavailable(self._unavailable(exc)) from None
        if current != head:
            raise ConfigError(
                f"{self.what} at {safe_url(self.url)} is at schema revision {current}, expected {head}; "
                f"run '{self.migrate_command}'"
            )

    def _unavailable(self, exc: OperationalError) -> str:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
        return f"cannot open the {self.what} at {safe_url(self.url)}: {reason}"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        try:
            with self._sessions() as session, session.begin():
                yield session
        except OperationalError as exc:
            raise CatalogueUnavailable(self._unavailable(exc)) from None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core connection in a transaction: committed on success, rolled back on error."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise CatalogueUnavailable(self._unavailable(exc)) from None

    def dispose(self) -> None:
        self.engine.dispose()

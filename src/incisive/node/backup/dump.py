"""Consistent catalogue snapshots: the SQLite online backup API, or ``pg_dump --format=custom`` pinned to an
exported snapshot so the object list read in the same transaction matches the dump exactly.

The dump is taken *before* objects are copied: ingest writes an object durably before its catalogue row, so
every object the dump references is already in the store, while ingest goes on during the backup.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.engine import URL, make_url

from incisive.common.envelope import HEADER_BYTES, is_envelope
from incisive.common.errors import ConfigError, IncisiveError, InputError
from incisive.node.catalogue import Catalogue

SQLITE_FILE = "catalogue.sqlite"
PG_FILE = "catalogue.pgdump"
_REFS = {"store": "SELECT object_hash FROM instance", "quarantine": "SELECT object_hash FROM quarantine_item"}


@dataclass
class CatalogueSnapshot:
    dialect: str
    file: Path
    refs: dict[str, set[str]] = field(default_factory=dict)  # area -> referenced object hashes


def snapshot(catalogue: Catalogue, out_dir: Path) -> CatalogueSnapshot:
    if catalogue.dialect == "sqlite":
        return _sqlite_snapshot(sqlite_path(catalogue.url), out_dir / SQLITE_FILE)
    if catalogue.dialect == "postgresql":
        return _pg_snapshot(catalogue, out_dir / PG_FILE)
    raise ConfigError(f"backing up a {catalogue.dialect} catalogue is not supported")


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise ConfigError("an in-memory SQLite catalogue cannot be backed up")
    return Path(database)


def _sqlite_snapshot(source: Path, target: Path) -> CatalogueSnapshot:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)  # one step: a consistent read transaction; WAL writers are not blocked
        dst.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file on the target
        refs = {area: {r[0] for r in dst.execute(sql)} for area, sql in _REFS.items()}
        dst.commit()
    finally:
        dst.close()
        src.close()
    with open(target, "rb+") as fh:
        os.fsync(fh.fileno())
    return CatalogueSnapshot("sqlite", target, refs)


def pg_env(url: URL | str) -> tuple[list[str], dict[str, str]]:
    """libpq arguments and environment for a SQLAlchemy URL (the password travels in the environment)."""
    u = make_url(url) if isinstance(url, str) else url
    args = ["--dbname", u.database or "postgres"]
    if u.host:
        args += ["--host", u.host]
    if u.port:
        args += ["--port", str(u.port)]
    if u.username:
        args += ["--username", u.username]
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    sslmode = u.query.get("sslmode")
    if isinstance(sslmode, str):
        env["PGSSLMODE"] = sslmode
    return args, env


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ConfigError(f"{name} not found; install the PostgreSQL client tools (Debian: postgresql-client)")
    return path


def _pg_snapshot(catalogue: Catalogue, target: Path) -> CatalogueSnapshot:
    args, env = pg_env(catalogue.engine.url)
    with catalogue.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            exported = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            refs = _refs(conn)
            # a catalogue in its own schema (a Central Node tenant: search_path in the URL) dumps that schema only,
            # never the other tenants' sharing the database
            schema = str(conn.execute(text("SELECT current_schema()")).scalar_one())
            only = [] if schema == "public" else [f"--schema={schema}"]
            proc = subprocess.run(
                [_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", f"--snapshot={exported}",
                 f"--file={target}", *only, *args], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise IncisiveError(f"pg_dump failed: {_first_line(proc.stderr)}")
    with open(target, "rb+") as fh:
        os.fsync(fh.fileno())
    return CatalogueSnapshot("postgresql", target, refs)


def _refs(conn: Connection) -> dict[str, set[str]]:
    return {area: {r[0] for r in conn.execute(text(sql))} for area, sql in _REFS.items()}


def _first_line(text_: str) -> str:
    lines = [line for line in text_.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no message"


def check_dump(dialect: str, path: Path) -> str | None:
    """None when the dump opens and looks whole; else why not.

    A Central Node tenant's dump is sealed (``*.sealed``, :mod:`incisive.node.backup.stage`): without the tenant's
    key only its envelope is checked here (its bytes already matched the manifest's sha256); the restore opens
    every chunk's tag."""
    if path.name.endswith(".sealed"):
        with path.open("rb") as fh:
            head = fh.read(HEADER_BYTES)
        return None if is_envelope(head) else "sealed catalogue dump has no envelope header"
    if dialect == "sqlite":
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
            try:
                result = con.execute("PRAGMA integrity_check").fetchone()
                con.execute("SELECT version_num FROM alembic_version").fetchone()
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            return f"SQLite snapshot does not open: {exc}"
        return None if result and result[0] == "ok" else f"SQLite integrity check: {result[0] if result else '?'}"
    proc = subprocess.run([_tool("pg_restore"), "--list", str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return f"pg_restore cannot read the archive: {_first_line(proc.stderr)}"
    return None if "TABLE DATA" in proc.stdout else "archive holds no table data"


def restore_sqlite(dump: Path, database: Path) -> None:
    if database.exists():
        raise InputError(f"{database} already exists")
    database.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dump, database)
    with open(database, "rb+") as fh:
        os.fsync(fh.fileno())


def restore_pg(dump: Path, url: str) -> None:
    """Load a custom-format dump into an *empty* PostgreSQL database."""
    catalogue = Catalogue(url)
    try:
        with catalogue.engine.connect() as conn:
            tables = conn.execute(text("SELECT count(*) FROM information_schema.tables "
                                       "WHERE table_schema = current_schema()")).scalar_one()
    finally:
        catalogue.dispose()
    if tables:
        raise InputError("the PostgreSQL database to restore into is not empty")
    args, env = pg_env(url)
    proc = subprocess.run([_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", *args, str(dump)],
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise IncisiveError(f"pg_restore failed: {_first_line(proc.stderr)}")

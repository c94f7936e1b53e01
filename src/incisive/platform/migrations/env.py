"""Alembic environment for the platform database: runs on the connection handed over by :meth:`PlatformDb.migrate`."""

from alembic import context

from incisive.platform.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only used through PlatformDb.migrate
    raise RuntimeError("run migrations through incisive.platform.db.PlatformDb.migrate()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

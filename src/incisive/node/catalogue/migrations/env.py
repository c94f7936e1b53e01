"""Alembic environment: runs on the connection handed over by :meth:`Catalogue.migrate`."""

from alembic import context

from incisive.node.catalogue.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only used through Catalogue.migrate
    raise RuntimeError("run migrations through incisive.node.catalogue.Catalogue.migrate()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

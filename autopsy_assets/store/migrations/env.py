"""Alembic environment of the audit store, run programmatically by `AuditStore.migrate()`.

The caller hands over an open connection (inside a transaction that already holds the store's
migration lock) in `config.attributes["connection"]`. The version table is
`autopsy_alembic_version`: MLflow and Dagster keep Alembic's default `alembic_version` table and
may share the database.
"""
from __future__ import annotations

from alembic import context

VERSION_TABLE = "autopsy_alembic_version"

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - the store always passes its connection
    raise RuntimeError("run the audit store's migrations through AuditStore(url).migrate()")

context.configure(
    connection=connection,
    target_metadata=None,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

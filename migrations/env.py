"""Alembic's entry point for the decision log's schema.

Only ``decision_store.migrate`` runs it, handing over a connection already in a transaction (and
holding the migration lock), so there is no alembic.ini and no URL to read here.
"""
from __future__ import annotations

from alembic import context

from decision_store import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through decision_store.migrate(url) (or `cli.py migrate`), not the alembic CLI")

context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()

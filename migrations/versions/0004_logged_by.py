"""Which process's log stored each decision.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05

Each worker polls for what the log stored since it last looked, to learn of other workers' decisions. Its
own decisions were among the rows it read and dropped: thousands a poll on a busy service, read while holding
the interpreter its requests need. With the storing process's name on each decision, the database leaves
them out. Decisions logged before this revision have none, and are news to every worker.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch:  # batch mode: SQLite alters a table by copying it
        batch.add_column(sa.Column("logged_by", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("logged_by")

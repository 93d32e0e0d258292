"""When each decision was stored, and indexes for reading what was logged since a time.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Each worker keeps in memory which customers the log holds a contact history for, so that a customer
with none costs no read on the request path; it learns of other workers' decisions and feedback by
polling for rows logged since it last looked. ``created_at`` is when the answer was given, which a
batch retried after a database outage can carry minutes into the past, so decisions get the time the
writer stored them. Decisions logged before this revision have none: the start-up scan reads them by
``created_at``.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch:  # batch mode: SQLite alters a table by copying it
        batch.add_column(sa.Column("logged_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_decisions_logged_at", "decisions", ["logged_at"])
    op.create_index("ix_feedback_created_at", "feedback", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_feedback_created_at", "feedback")
    op.drop_index("ix_decisions_logged_at", "decisions")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("logged_at")

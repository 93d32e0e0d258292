"""Each decision's products held back by the contact policy, with the policy that held each back.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

The report's suppression rates per product and per protected group count them. Existing decisions
get an empty list: they were logged before suppressions were recorded.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch:  # batch mode: SQLite alters a table by copying it
        batch.add_column(sa.Column("suppressed", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("suppressed")

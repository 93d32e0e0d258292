"""The decision log: decisions, the products each offered, and the customer's feedback (issue 12).

Revision ID: 0001
Revises:
Create Date: 2026-12-02

Ids, scores, rule names and flags only: no post text and no profile values.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

FINAL_OUTCOME = "outcome IN ('accepted', 'declined')"


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("cold_start", sa.Boolean(), nullable=False),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("data_fingerprint", sa.String(64), nullable=False),
        sa.Column("bias_check_passed", sa.Boolean(), nullable=False),
        sa.Column("fallback_used", sa.Boolean(), nullable=False),
        sa.Column("degraded", sa.Boolean(), nullable=False),
        sa.Column("fallback_reasons", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_decisions"),
    )
    op.create_index("ix_decisions_customer_time", "decisions", ["customer_id", "created_at"])

    op.create_table(
        "offers",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("adjusted_score", sa.Float(), nullable=False),
        sa.Column("scored_by", sa.String(64), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "product_id", name="pk_offers"),
        sa.ForeignKeyConstraint(["request_id"], ["decisions.request_id"], name="fk_offers_request_id_decisions"),
    )

    op.create_table(
        "feedback",
        sa.Column("feedback_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
                  nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("feedback_id", name="pk_feedback"),
        sa.ForeignKeyConstraint(["request_id", "product_id"], ["offers.request_id", "offers.product_id"],
                                name="fk_feedback_request_id_offers"),
        sa.CheckConstraint("outcome IN ('shown', 'clicked', 'accepted', 'declined')", name="ck_feedback_outcome"),
    )
    op.create_index("ix_feedback_offer", "feedback", ["request_id", "product_id"])
    op.create_index("ix_feedback_customer_outcome_time", "feedback", ["customer_id", "outcome", "created_at"])
    # One final outcome per offer; shown and clicked may repeat.
    op.create_index("uq_feedback_one_final_outcome", "feedback", ["request_id", "product_id"], unique=True,
                    sqlite_where=sa.text(FINAL_OUTCOME), postgresql_where=sa.text(FINAL_OUTCOME))


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("offers")
    op.drop_table("decisions")

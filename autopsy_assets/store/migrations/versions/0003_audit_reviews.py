"""Manual review of audits (needs_review, ambiguous): who looked, when, what they decided.

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_reviews",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("audit_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  sa.ForeignKey("audits.id"), nullable=False),
        sa.Column("insight_id", sa.String(), nullable=False),
        sa.Column("horizon", sa.String(), nullable=False),
        sa.Column("decision", sa.String(), nullable=False),
        sa.Column("reviewer", sa.String(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_audit_reviews_insight_horizon", "audit_reviews", ["insight_id", "horizon"])
    op.create_index("ix_audit_reviews_reviewed_at", "audit_reviews", ["reviewed_at"])


def downgrade() -> None:
    op.drop_table("audit_reviews")

"""Learning loop: news events, market regimes, pattern checks, RCA findings, SHAP explanations,
the retrain-request audit trail, alias moves, A/B assignments.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, **kw)


def _big() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column:
    return sa.Column("id", _big(), primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "news_events",
        sa.Column("event_id", sa.Text(), primary_key=True),
        _ts("ts"),
        sa.Column("currencies", sa.Text(), nullable=False, server_default=""),
        sa.Column("impact", sa.String(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False, server_default=""),
        sa.Column("source", sa.String(), nullable=False, server_default=""),
    )
    op.create_index("ix_news_events_ts", "news_events", ["ts"])

    op.create_table(
        "market_regimes",
        sa.Column("symbol", sa.String(), primary_key=True),
        sa.Column("timeframe", sa.String(), primary_key=True),
        _ts("ts", primary_key=True),
        _ts("ts_end", nullable=True),
        sa.Column("regime", sa.String(), nullable=False),
        sa.Column("confidence", sa.Double(), nullable=True),
        sa.Column("source", sa.String(), nullable=False),
    )

    op.create_table(
        "pattern_checks",
        sa.Column("insight_id", sa.String(), primary_key=True),
        sa.Column("pattern", sa.String(), primary_key=True),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False, server_default="{}"),
        _ts("checked_at"),
        sa.Column("run_id", sa.String(), nullable=True),
    )

    op.create_table(
        "audit_rca",
        _id(),
        sa.Column("audit_id", _big(), sa.ForeignKey("audits.id", name="fk_audit_rca_audit"),
                  nullable=False),
        sa.Column("insight_id", sa.String(), nullable=False),
        sa.Column("horizon", sa.String(), nullable=False),
        sa.Column("cause", sa.String(), nullable=False),
        sa.Column("confidence", sa.Double(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False, server_default=""),
        sa.Column("evidence", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("snapshot_hash", sa.String(), nullable=True),
        _ts("analysed_at"),
        sa.Column("run_id", sa.String(), nullable=True),
    )
    op.create_index("ix_audit_rca_audit_rank", "audit_rca", ["audit_id", "rank"])
    op.create_index("ix_audit_rca_cause_confidence", "audit_rca", ["cause", "confidence"])
    op.create_index("ix_audit_rca_insight_horizon", "audit_rca", ["insight_id", "horizon"])

    op.create_table(
        "explanations",
        _id(),
        sa.Column("insight_id", sa.String(), nullable=False),
        sa.Column("horizon", sa.String(), nullable=False),
        sa.Column("model_name", sa.String(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("base_value", sa.Double(), nullable=True),
        sa.Column("output", sa.Double(), nullable=True),
        sa.Column("contributions", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("top_features", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("summary", sa.Text(), nullable=False, server_default=""),
        _ts("explained_at"),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.UniqueConstraint("insight_id", "horizon", "model_name", "model_version",
                            name="uq_explanations_key"),
    )

    op.create_table(
        "audit_trail",
        _id(),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("from_status", sa.String(), nullable=False),
        sa.Column("to_status", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        _ts("at"),
        sa.UniqueConstraint("request_id", "from_status", name="uq_audit_trail_request_from"),
    )

    op.create_table(
        "alias_moves",
        sa.Column("model_name", sa.String(), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("alias", sa.String(), nullable=False),
        sa.Column("from_version", sa.String(), nullable=True),
        sa.Column("to_version", sa.String(), nullable=True),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        _ts("at"),
    )

    op.create_table(
        "ab_assignments",
        sa.Column("insight_id", sa.String(), primary_key=True),
        sa.Column("model_name", sa.String(), primary_key=True),
        sa.Column("arm", sa.String(), nullable=False),
        sa.Column("share", sa.Double(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=True),
        _ts("assigned_at"),
    )


def downgrade() -> None:
    for table in ("ab_assignments", "alias_moves", "audit_trail", "explanations", "audit_rca",
                  "pattern_checks", "market_regimes", "news_events"):
        op.drop_table(table)

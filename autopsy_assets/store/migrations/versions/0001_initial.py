"""Initial audit store: candle blocks and days, insights, labeling rules, audits, quarantine.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, **kw)


def _id() -> sa.Column:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                     primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "candle_blocks",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("timeframe", sa.String(), nullable=False),
        _ts("day"),
        sa.Column("n_rows", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        _ts("created_at"),
    )
    op.create_index("ix_candle_blocks_symbol_tf_day", "candle_blocks",
                    ["symbol", "timeframe", "day"])

    op.create_table(
        "candle_days",
        sa.Column("symbol", sa.String(), primary_key=True),
        sa.Column("timeframe", sa.String(), primary_key=True),
        _ts("day", primary_key=True),
        sa.Column("sha256", sa.String(64),
                  sa.ForeignKey("candle_blocks.sha256", name="fk_candle_days_block"),
                  nullable=False),
        _ts("first_ts"),
        _ts("last_ts"),
        sa.Column("n_rows", sa.Integer(), nullable=False),
        _ts("updated_at"),
    )

    op.create_table(
        "insights",
        sa.Column("insight_id", sa.String(), primary_key=True),
        _ts("created_at"),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("side", sa.String(), nullable=False),
        sa.Column("entry_price", sa.Double(), nullable=True),
        sa.Column("timeframe", sa.String(), nullable=True),
        sa.Column("stop_loss", sa.Double(), nullable=True),
        sa.Column("take_profit", sa.Double(), nullable=True),
        sa.Column("strategy", sa.String(), nullable=False, server_default=""),
        sa.Column("patterns", sa.Text(), nullable=False, server_default=""),
        sa.Column("ai_score", sa.Double(), nullable=True),
        sa.Column("confidence", sa.Double(), nullable=True),
        sa.Column("truth_index", sa.Double(), nullable=True),
        sa.Column("status", sa.String(), nullable=False, server_default="published"),
        sa.Column("user_id", sa.String(), nullable=False, server_default=""),
        sa.Column("user_acted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("fill_price", sa.Double(), nullable=True),
        _ts("filled_at", nullable=True),
        _ts("updated_at"),
    )
    op.create_index("ix_insights_created_at", "insights", ["created_at"])
    op.create_index("ix_insights_symbol_created_at", "insights", ["symbol", "created_at"])

    op.create_table(
        "labeling_rules",
        sa.Column("rule_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("strategy", sa.String(), nullable=True),
        sa.Column("symbol", sa.String(), nullable=True),
        sa.Column("timeframe", sa.String(), nullable=True),
        sa.Column("horizon", sa.String(), nullable=True),
        sa.Column("success_tp_pips", sa.Double(), nullable=True),
        sa.Column("success_rr_ratio", sa.Double(), nullable=True),
        sa.Column("fail_sl_pips", sa.Double(), nullable=True),
        sa.Column("fail_adverse_pct", sa.Double(), nullable=True),
        sa.Column("neutral_band_pips", sa.Double(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("notes", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_by", sa.String(), nullable=False, server_default=""),
        _ts("updated_at"),
    )

    op.create_table(
        "audits",
        _id(),
        sa.Column("insight_id", sa.String(), nullable=False),
        sa.Column("horizon", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("side", sa.String(), nullable=True),
        sa.Column("strategy", sa.String(), nullable=True),
        sa.Column("timeframe", sa.String(), nullable=True),
        sa.Column("candle_timeframe", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=True),
        sa.Column("user_id", sa.String(), nullable=True),
        sa.Column("user_acted", sa.Boolean(), nullable=False),
        _ts("created_at"),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("replay_outcome", sa.String(), nullable=True),
        sa.Column("exit_reason", sa.String(), nullable=True),
        sa.Column("entry_price", sa.Double(), nullable=True),
        sa.Column("stop_price", sa.Double(), nullable=True),
        sa.Column("target_price", sa.Double(), nullable=True),
        sa.Column("exit_price", sa.Double(), nullable=True),
        _ts("exit_time", nullable=True),
        sa.Column("high_price", sa.Double(), nullable=True),
        sa.Column("low_price", sa.Double(), nullable=True),
        sa.Column("pnl_pct", sa.Double(), nullable=True),
        sa.Column("max_drawdown", sa.Double(), nullable=True),
        sa.Column("max_favorable", sa.Double(), nullable=True),
        sa.Column("duration_minutes", sa.Double(), nullable=True),
        sa.Column("risk_reward_actual", sa.Double(), nullable=True),
        sa.Column("slippage_pips", sa.Double(), nullable=True),
        sa.Column("gap_pips", sa.Double(), nullable=True),
        sa.Column("ambiguous", sa.Boolean(), nullable=False),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column("needs_review_reason", sa.Text(), nullable=True),
        _ts("window_start", nullable=True),
        _ts("window_end", nullable=True),
        _ts("candles_until", nullable=True),
        sa.Column("rule_id", sa.Integer(), nullable=True),
        sa.Column("rule_snapshot", sa.Text(), nullable=True),
        sa.Column("rule_hash", sa.String(), nullable=False),
        sa.Column("candles_hash", sa.String(), nullable=False),
        sa.Column("candle_blocks", sa.Text(), nullable=True),
        sa.Column("snapshot_hash", sa.String(), nullable=True),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        _ts("evaluated_at"),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.UniqueConstraint("insight_id", "horizon", "rule_hash", "candles_hash",
                            name="uq_audits_key"),
    )
    op.create_index("ix_audits_insight_horizon", "audits", ["insight_id", "horizon"])
    op.create_index("ix_audits_outcome_evaluated_at", "audits", ["outcome", "evaluated_at"])
    op.create_index("ix_audits_user_evaluated_at", "audits", ["user_id", "evaluated_at"])
    op.create_index("ix_audits_needs_review_evaluated_at", "audits",
                    ["needs_review", "evaluated_at"])
    op.create_index("ix_audits_current_created_at", "audits", ["is_current", "created_at"])
    # exactly one current row per (insight_id, horizon), enforced by the database
    op.create_index("uq_audits_one_current", "audits", ["insight_id", "horizon"], unique=True,
                    sqlite_where=sa.text("is_current"), postgresql_where=sa.text("is_current"))

    op.create_table(
        "quarantine",
        _id(),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("row_id", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("partition_key", sa.String(), nullable=True),
        _ts("quarantined_at"),
    )
    op.create_index("ix_quarantine_source_quarantined_at", "quarantine",
                    ["source", "quarantined_at"])


def downgrade() -> None:
    for table in ("quarantine", "audits", "labeling_rules", "insights", "candle_days",
                  "candle_blocks"):
        op.drop_table(table)

"""Table definitions of the audit store (SQLAlchemy Core; DESIGN.md sections 2a and 4).

These Table objects are what the store reads and writes through. The schema itself is created by
the Alembic migrations in `migrations/versions/` (frozen copies, never generated from here); a test
checks that the two agree.

Times are tz-aware UTC. On PostgreSQL they are `timestamp with time zone`; on SQLite they are text
in SQLAlchemy's own format ("YYYY-MM-DD HH:MM:SS.ffffff", UTC), fixed width so that text order is
time order. The store keeps microseconds (the drivers' precision); candle times inside blocks
keep their nanoseconds.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

from autopsy_assets.domain.schemas import AUDIT_COLUMNS

SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


class UTCDateTime(TypeDecorator):
    """A tz-aware UTC timestamp.

    Bind values may be datetimes / pandas Timestamps (converted to UTC) or strings already in the
    dialect's wire form (SQLite text, see `SQLITE_TIME_FORMAT`), which the store's bulk paths
    produce vectorised. Results are returned raw (SQLite text, psycopg2 datetimes) and converted
    to `datetime64[ns, UTC]` columns by the store in one vectorised step.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String())
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None or isinstance(value, str):
            return value
        if value is pd.NaT:
            return None
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                raise ValueError(f"naive datetime {value!r}: the audit store takes UTC times")
            # drivers and columns hold microseconds: a Timestamp's nanoseconds are dropped
            value = pd.Timestamp(value).tz_convert("UTC").to_pydatetime(warn=False)
            if dialect.name == "sqlite":
                return value.strftime(SQLITE_TIME_FORMAT)
            return value
        raise TypeError(f"not a timestamp: {value!r}")


metadata = sa.MetaData()

_STR = sa.String()
_HASH = sa.String(64)


def _time(name: str, **kw: Any) -> sa.Column:
    return sa.Column(name, UTCDateTime(), **kw)


candle_blocks = sa.Table(
    "candle_blocks", metadata,
    sa.Column("sha256", _HASH, primary_key=True),
    sa.Column("symbol", _STR, nullable=False),
    sa.Column("timeframe", _STR, nullable=False),
    _time("day", nullable=False),
    sa.Column("n_rows", sa.Integer(), nullable=False),
    sa.Column("payload", sa.LargeBinary(), nullable=False),
    _time("created_at", nullable=False),
    sa.Index("ix_candle_blocks_symbol_tf_day", "symbol", "timeframe", "day"),
)

candle_days = sa.Table(
    "candle_days", metadata,
    sa.Column("symbol", _STR, primary_key=True),
    sa.Column("timeframe", _STR, primary_key=True),
    _time("day", primary_key=True),
    sa.Column("sha256", _HASH, sa.ForeignKey("candle_blocks.sha256", name="fk_candle_days_block"),
              nullable=False),
    _time("first_ts", nullable=False),
    _time("last_ts", nullable=False),
    sa.Column("n_rows", sa.Integer(), nullable=False),
    _time("updated_at", nullable=False),
)

insights = sa.Table(
    "insights", metadata,
    sa.Column("insight_id", _STR, primary_key=True),
    _time("created_at", nullable=False),
    sa.Column("symbol", _STR, nullable=False),
    sa.Column("side", _STR, nullable=False),
    sa.Column("entry_price", sa.Double(), nullable=True),
    sa.Column("timeframe", _STR, nullable=True),
    sa.Column("stop_loss", sa.Double(), nullable=True),
    sa.Column("take_profit", sa.Double(), nullable=True),
    sa.Column("strategy", _STR, nullable=False, server_default=""),
    sa.Column("patterns", sa.Text(), nullable=False, server_default=""),
    sa.Column("ai_score", sa.Double(), nullable=True),
    sa.Column("confidence", sa.Double(), nullable=True),
    sa.Column("truth_index", sa.Double(), nullable=True),
    sa.Column("status", _STR, nullable=False, server_default="published"),
    sa.Column("user_id", _STR, nullable=False, server_default=""),
    sa.Column("user_acted", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("fill_price", sa.Double(), nullable=True),
    _time("filled_at", nullable=True),
    _time("updated_at", nullable=False),
    sa.Index("ix_insights_created_at", "created_at"),
    sa.Index("ix_insights_symbol_created_at", "symbol", "created_at"),
)

labeling_rules = sa.Table(
    "labeling_rules", metadata,
    sa.Column("rule_id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("strategy", _STR, nullable=True),
    sa.Column("symbol", _STR, nullable=True),
    sa.Column("timeframe", _STR, nullable=True),
    sa.Column("horizon", _STR, nullable=True),
    sa.Column("success_tp_pips", sa.Double(), nullable=True),
    sa.Column("success_rr_ratio", sa.Double(), nullable=True),
    sa.Column("fail_sl_pips", sa.Double(), nullable=True),
    sa.Column("fail_adverse_pct", sa.Double(), nullable=True),
    sa.Column("neutral_band_pips", sa.Double(), nullable=True),
    sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("notes", sa.Text(), nullable=False, server_default=""),
    sa.Column("created_by", _STR, nullable=False, server_default=""),
    _time("updated_at", nullable=False),
)

_AUDIT_TYPES = {"str": sa.String, "bool": sa.Boolean, "float": sa.Double, "int": sa.Integer,
                "datetime": UTCDateTime}
_AUDIT_TEXT = {"rule_snapshot", "candle_blocks", "needs_review_reason"}
_AUDIT_NOT_NULL = {"insight_id", "horizon", "symbol", "outcome", "rule_hash", "candles_hash",
                   "created_at"}


def _audit_column(name: str, kind: str) -> sa.Column:
    type_ = sa.Text() if name in _AUDIT_TEXT else _AUDIT_TYPES[kind]()
    nullable = name not in _AUDIT_NOT_NULL and kind not in ("bool",)
    return sa.Column(name, type_, nullable=nullable)


audits = sa.Table(
    "audits", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    *[_audit_column(name, kind) for name, kind in AUDIT_COLUMNS.items()],
    sa.Column("is_current", sa.Boolean(), nullable=False),
    _time("evaluated_at", nullable=False),
    sa.Column("run_id", _STR, nullable=True),
    sa.UniqueConstraint("insight_id", "horizon", "rule_hash", "candles_hash", name="uq_audits_key"),
    sa.Index("ix_audits_insight_horizon", "insight_id", "horizon"),
    sa.Index("ix_audits_outcome_evaluated_at", "outcome", "evaluated_at"),
    sa.Index("ix_audits_user_evaluated_at", "user_id", "evaluated_at"),
    sa.Index("ix_audits_needs_review_evaluated_at", "needs_review", "evaluated_at"),
    sa.Index("ix_audits_current_created_at", "is_current", "created_at"),
    # the invariant "exactly one current row per (insight_id, horizon)", enforced by the database
    sa.Index("uq_audits_one_current", "insight_id", "horizon", unique=True,
             sqlite_where=sa.text("is_current"), postgresql_where=sa.text("is_current")),
)

quarantine = sa.Table(
    "quarantine", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("source", _STR, nullable=False),
    sa.Column("row_id", sa.Text(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("payload", sa.Text(), nullable=True),
    sa.Column("run_id", _STR, nullable=True),
    sa.Column("partition_key", _STR, nullable=True),
    _time("quarantined_at", nullable=False),
    sa.Index("ix_quarantine_source_quarantined_at", "source", "quarantined_at"),
)

# ----------------------------------------------------------------------------- 0002: learning loop

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

news_events = sa.Table(
    "news_events", metadata,
    sa.Column("event_id", sa.Text(), primary_key=True),
    _time("ts", nullable=False),
    sa.Column("currencies", sa.Text(), nullable=False, server_default=""),  # '|' joined codes
    sa.Column("impact", _STR, nullable=False),
    sa.Column("title", sa.Text(), nullable=False, server_default=""),
    sa.Column("source", _STR, nullable=False, server_default=""),
    sa.Index("ix_news_events_ts", "ts"),
)

market_regimes = sa.Table(
    "market_regimes", metadata,
    sa.Column("symbol", _STR, primary_key=True),
    sa.Column("timeframe", _STR, primary_key=True),  # '' for a feed without timeframes
    _time("ts", primary_key=True),
    _time("ts_end", nullable=True),
    sa.Column("regime", _STR, nullable=False),
    sa.Column("confidence", sa.Double(), nullable=True),
    sa.Column("source", _STR, nullable=False),  # derived | feed
)

pattern_checks = sa.Table(
    "pattern_checks", metadata,
    sa.Column("insight_id", _STR, primary_key=True),
    sa.Column("pattern", _STR, primary_key=True),
    sa.Column("verified", sa.Boolean(), nullable=False),
    sa.Column("evidence", sa.Text(), nullable=False, server_default="{}"),
    _time("checked_at", nullable=False),
    sa.Column("run_id", _STR, nullable=True),
)

audit_rca = sa.Table(
    "audit_rca", metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("audit_id", _ID, sa.ForeignKey("audits.id", name="fk_audit_rca_audit"),
              nullable=False),
    sa.Column("insight_id", _STR, nullable=False),
    sa.Column("horizon", _STR, nullable=False),
    sa.Column("cause", _STR, nullable=False),
    sa.Column("confidence", sa.Double(), nullable=False),
    sa.Column("rank", sa.Integer(), nullable=False),
    sa.Column("summary", sa.Text(), nullable=False, server_default=""),
    sa.Column("evidence", sa.Text(), nullable=False, server_default="{}"),
    sa.Column("snapshot_hash", _STR, nullable=True),
    _time("analysed_at", nullable=False),
    sa.Column("run_id", _STR, nullable=True),
    sa.Index("ix_audit_rca_audit_rank", "audit_id", "rank"),
    sa.Index("ix_audit_rca_cause_confidence", "cause", "confidence"),
    sa.Index("ix_audit_rca_insight_horizon", "insight_id", "horizon"),
)

explanations = sa.Table(
    "explanations", metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("insight_id", _STR, nullable=False),
    sa.Column("horizon", _STR, nullable=False),
    sa.Column("model_name", _STR, nullable=False),
    sa.Column("model_version", _STR, nullable=False),
    sa.Column("base_value", sa.Double(), nullable=True),
    sa.Column("output", sa.Double(), nullable=True),
    sa.Column("contributions", sa.Text(), nullable=False, server_default="{}"),
    sa.Column("top_features", sa.Text(), nullable=False, server_default="[]"),
    sa.Column("summary", sa.Text(), nullable=False, server_default=""),
    _time("explained_at", nullable=False),
    sa.Column("run_id", _STR, nullable=True),
    sa.UniqueConstraint("insight_id", "horizon", "model_name", "model_version",
                        name="uq_explanations_key"),
)

audit_trail = sa.Table(
    "audit_trail", metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("request_id", _STR, nullable=False),
    sa.Column("from_status", _STR, nullable=False),  # '' for the creation of a request
    sa.Column("to_status", _STR, nullable=False),
    sa.Column("actor", _STR, nullable=False),
    sa.Column("reason", sa.Text(), nullable=False, server_default=""),
    _time("at", nullable=False),
    # one transition out of each status: of two racing from the same status, one wins
    sa.UniqueConstraint("request_id", "from_status", name="uq_audit_trail_request_from"),
)

alias_moves = sa.Table(
    "alias_moves", metadata,
    sa.Column("model_name", _STR, primary_key=True),
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("alias", _STR, nullable=False),
    sa.Column("from_version", _STR, nullable=True),
    sa.Column("to_version", _STR, nullable=True),
    sa.Column("actor", _STR, nullable=False),
    sa.Column("reason", sa.Text(), nullable=False, server_default=""),
    _time("at", nullable=False),
)

ab_assignments = sa.Table(
    "ab_assignments", metadata,
    sa.Column("insight_id", _STR, primary_key=True),
    sa.Column("model_name", _STR, primary_key=True),
    sa.Column("arm", _STR, nullable=False),  # champion | challenger
    sa.Column("share", sa.Double(), nullable=False),
    sa.Column("model_version", _STR, nullable=True),
    _time("assigned_at", nullable=False),
)

audit_reviews = sa.Table(
    "audit_reviews", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("audit_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
              sa.ForeignKey("audits.id"), nullable=False),
    sa.Column("insight_id", _STR, nullable=False),
    sa.Column("horizon", _STR, nullable=False),
    sa.Column("decision", _STR, nullable=False),  # confirmed | relabel | data_issue
    sa.Column("reviewer", _STR, nullable=False),
    sa.Column("notes", sa.Text(), nullable=False),
    _time("reviewed_at", nullable=False),
    sa.Index("ix_audit_reviews_insight_horizon", "insight_id", "horizon"),
    sa.Index("ix_audit_reviews_reviewed_at", "reviewed_at"),
)

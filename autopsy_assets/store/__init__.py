"""The audit store (DESIGN.md sections 1 and 2a): SQLAlchemy 2 tables + Alembic migrations;
SQLite by default (`.autopsy/audit.db`), PostgreSQL via AUTOPSY_DATABASE_URL. No dagster import.
"""
from autopsy_assets.store.db import (
    AUDIT_METRICS,
    CANDLE_COLUMNS,
    DATABASE_URL_ENV,
    INSIGHT_COLUMNS,
    MIGRATIONS_DIR,
    RULE_COLUMNS,
    UPSERT_COUNTS,
    VERSION_TABLE,
    AliasMoveConflict,
    AuditStore,
    MissingCandleBlocksError,
    TransitionConflict,
    normalize_url,
)

__all__ = [
    "AUDIT_METRICS", "CANDLE_COLUMNS", "DATABASE_URL_ENV", "INSIGHT_COLUMNS", "MIGRATIONS_DIR",
    "RULE_COLUMNS", "UPSERT_COUNTS", "VERSION_TABLE", "AliasMoveConflict", "AuditStore",
    "MissingCandleBlocksError", "TransitionConflict", "normalize_url",
]

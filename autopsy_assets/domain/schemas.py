"""Column contracts of the frames that cross autopsy's edges (DESIGN.md sections 2 and 2a).

The required/optional column lists here are the single source for what `api.label_outcomes`
accepts and returns, what the audit store persists, and what the loaders validate.
"""

from __future__ import annotations

import pandas as pd

HORIZONS: dict[str, int] = {"1H": 60, "4H": 240, "24H": 1440, "7D": 10080}  # minutes
TIMEFRAMES: dict[str, int] = {
    "1m": 1,
    "5m": 5,
    "15m": 15,
    "30m": 30,
    "1h": 60,
    "4h": 240,
    "1d": 1440,
}  # minutes
SIDES = ("long", "short")
OUTCOMES = ("succeeded", "failed", "neutral", "filtered_out", "pending", "needs_review")
EXIT_REASONS = ("stop", "target", "horizon", "gap_stop", "gap_target")
INSIGHT_STATUSES = ("published", "filtered")
PATTERN_CODES = ("BOS", "CHOCH", "FVG", "OB", "BREAKOUT")

INSIGHT_REQUIRED = ("insight_id", "created_at", "symbol", "side", "entry_price")
# optional column -> default when absent (documented in api.label_outcomes)
INSIGHT_OPTIONAL = {
    "timeframe": None,  # None: the timeframe of the candles walked
    "stop_loss": float("nan"),
    "take_profit": float("nan"),
    "strategy": "",
    "patterns": "",  # '|' or ',' joined codes in CSV/SQL; a list in Python
    "ai_score": float("nan"),
    "confidence": float("nan"),
    "truth_index": float("nan"),
    "status": "published",
    "user_id": "",
    "user_acted": False,
    "fill_price": float("nan"),
    "filled_at": None,
}

CANDLE_REQUIRED = ("symbol", "ts", "open", "high", "low", "close")
CANDLE_OPTIONAL = ("timeframe", "volume", "spread")

# One row per insight x horizon: what label_outcomes returns and the audit store keeps.
AUDIT_COLUMNS: dict[str, str] = {
    "insight_id": "str",
    "horizon": "str",
    "symbol": "str",
    "side": "str",
    "strategy": "str",
    "timeframe": "str",  # the insight's timeframe (or the walked one when it had none)
    "candle_timeframe": "str",  # the candles actually walked (the finest covering the window)
    "status": "str",
    "user_id": "str",
    "user_acted": "bool",
    "created_at": "datetime",
    "outcome": "str",
    "replay_outcome": "str",  # what the replay says, also for filtered_out insights
    "exit_reason": "str",  # '' while pending / needs_review
    "entry_price": "float",
    "stop_price": "float",
    "target_price": "float",
    "exit_price": "float",
    "exit_time": "datetime",
    "high_price": "float",
    "low_price": "float",
    "pnl_pct": "float",
    "max_drawdown": "float",
    "max_favorable": "float",
    "duration_minutes": "float",
    "risk_reward_actual": "float",
    "slippage_pips": "float",
    "gap_pips": "float",  # how far beyond the level the deciding bar opened (gap exits)
    "ambiguous": "bool",
    "needs_review": "bool",
    "needs_review_reason": "str",
    "window_start": "datetime",
    "window_end": "datetime",
    "candles_until": "datetime",  # end of the last bar read: what a pending audit has seen
    "rule_id": "int",
    "rule_snapshot": "str",  # canonical JSON of the rule used, whole
    "rule_hash": "str",
    "candles_hash": "str",
    "candle_blocks": "str",  # comma-joined sha256 of the blocks read, in time order
    "snapshot_hash": "str",
}

QUARANTINE_COLUMNS = ("source", "row_id", "reason")


# --- pandera contracts of the frames written at the store's edge ------------------------------
# The row rules (what quarantines a row) live in validation.py, vectorised for speed; these
# schemas check what leaves the core for the store: a failure here is a bug, never bad input.


def _pandera():
    import pandera.pandas as pa  # imported lazily: pandera costs ~0.5 s to import

    return pa


def _text_ids(pa, **kwargs):
    """The insight ids: text, as object strings or pandas' arrow-backed `str` (validation keeps
    arrow-backed ids as they came, see validation._unique_text_ids)."""
    return pa.Column(
        None,
        pa.Check(
            lambda s: pd.api.types.is_string_dtype(s.dtype)
            and (s.dtype != object or pd.api.types.infer_dtype(s, skipna=False) == "string"),
            element_wise=False,
            name="text",
        ),
        **kwargs,
    )


def clean_candles_schema():
    pa = _pandera()
    price = pa.Column(float, pa.Check.gt(0))
    return pa.DataFrameSchema(
        {
            "symbol": pa.Column(object),
            "timeframe": pa.Column(object, pa.Check.isin(list(TIMEFRAMES))),
            "ts": pa.Column("datetime64[ns, UTC]"),
            "open": price,
            "high": price,
            "low": price,
            "close": price,
            "spread": pa.Column(float, pa.Check.ge(0)),
        },
        checks=[pa.Check(lambda d: d["high"] >= d["low"], name="high >= low")],
        strict=False,
    )


def clean_insights_schema():
    pa = _pandera()
    return pa.DataFrameSchema(
        {
            "insight_id": _text_ids(pa, unique=True),
            "created_at": pa.Column("datetime64[ns, UTC]"),
            "symbol": pa.Column(object),
            "side": pa.Column(object, pa.Check.isin(list(SIDES))),
            "entry_price": pa.Column(float, pa.Check.gt(0)),
            "stop_loss": pa.Column(float, nullable=True),
            "take_profit": pa.Column(float, nullable=True),
            "status": pa.Column(object, pa.Check.isin(list(INSIGHT_STATUSES))),
        },
        strict=False,
    )


def audits_schema():
    pa = _pandera()
    pct = pa.Column(float, pa.Check.ge(0), nullable=True)
    return pa.DataFrameSchema(
        {
            "insight_id": _text_ids(pa),
            "horizon": pa.Column(object, pa.Check.isin(list(HORIZONS))),
            "outcome": pa.Column(object, pa.Check.isin(list(OUTCOMES))),
            "replay_outcome": pa.Column(
                object, pa.Check.isin([o for o in OUTCOMES if o != "filtered_out"])
            ),
            "exit_reason": pa.Column(object, pa.Check.isin(["", *EXIT_REASONS])),
            "max_drawdown": pct,
            "max_favorable": pct,
            "duration_minutes": pa.Column(float, pa.Check.ge(0), nullable=True),
            "rule_hash": pa.Column(object, pa.Check.str_length(64, 64)),
            "candles_hash": pa.Column(object, pa.Check.str_length(64, 64)),
            "snapshot_hash": pa.Column(object, pa.Check.str_length(64, 64)),
        },
        checks=[
            pa.Check(
                lambda d: (d["exit_reason"] == "") == d["exit_price"].isna(),
                name="an exit price exactly when there is an exit reason",
            )
        ],
        strict=False,
    )

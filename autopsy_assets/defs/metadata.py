"""Small helpers that turn frames into Dagster metadata (markdown tables a person reads)."""

from __future__ import annotations

import pandas as pd


def md_table(df: pd.DataFrame, floatfmt: str = "{:.4g}") -> str:
    if df.empty:
        return "_none_"

    def cell(v):
        if isinstance(v, float):
            return "" if pd.isna(v) else floatfmt.format(v)
        return str(v).replace("|", "/")

    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns)
    rows = ["| " + " | ".join(cell(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, *rows])


def outcome_matrix(audits: pd.DataFrame) -> pd.DataFrame:
    """Counts per horizon x outcome, horizons in their natural order."""
    if audits.empty:
        return pd.DataFrame()
    m = audits.groupby(["horizon", "outcome"]).size().unstack(fill_value=0)
    order = [h for h in ("1H", "4H", "24H", "7D") if h in m.index]
    return m.loc[order].reset_index()


def quarantine_summary(rows) -> pd.DataFrame:
    df = pd.DataFrame(list(rows), columns=["source", "row_id", "reason"])
    return df.head(20)

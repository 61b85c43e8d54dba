"""The `autopsy` command: run audits as real Dagster runs on the configured instance.

    autopsy demo                      the whole demo span (what `make run` does)
    autopsy run --from-date 2018-03-05 --to-date 2018-03-09 --symbol EURUSD --horizons 4H,24H
    autopsy run --insight-id INS-000123 --force
    autopsy run --last-days 7 --dry-run
    autopsy quarantine [--source insights]

Runs execute in-process against $DAGSTER_HOME (synchronous: the command returns when the run is
done) and show in the Dagster UI (`make ui`) afterwards.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

from autopsy_assets.domain.schemas import HORIZONS

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def _ensure_instance_home() -> Path:
    """DAGSTER_HOME, defaulting to .autopsy/dagster_home with telemetry off (as the Makefile)."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        from autopsy_assets.resources import autopsy_home
        home = str(autopsy_home() / "dagster_home")
        os.environ["DAGSTER_HOME"] = home
    path = Path(home).resolve()
    path.mkdir(parents=True, exist_ok=True)
    cfg = path / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text("telemetry:\n  enabled: false\n")
    return path


def _execute(job_name: str, first_day: str, last_day: str, run_config: dict | None, tags: dict):
    import dagster as dg

    from autopsy_assets.definitions import defs

    job = defs.resolve_job_def(job_name)
    # the console shows warnings (quarantine counts, failures); every event is in the UI anyway
    level = os.environ.get("AUTOPSY_LOG_LEVEL", "WARNING")
    config = {"loggers": {"console": {"config": {"log_level": level}}}, **(run_config or {})}
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance, run_config=config, raise_on_error=False,
            tags={RANGE_START: first_day, RANGE_END: last_day, **tags})
    return result


def _store():
    from autopsy_assets.resources import AuditStoreResource
    return AuditStoreResource().get()


def _print_summary(store, start: pd.Timestamp, end: pd.Timestamp, run_id: str, seconds: float) -> None:
    summary = store.outcome_summary(start, end)
    print("\nAudits per horizon and outcome (current rows):")
    if summary.empty:
        print("  none")
    else:
        table = summary.pivot_table(index="horizon", columns="outcome", values="count",
                                    aggfunc="sum", fill_value=0) if "count" in summary else summary
        order = [h for h in HORIZONS if h in table.index]
        print(table.loc[order].to_string() if order else table.to_string())
    q = store.read_quarantine()
    mine = q[q["run_id"] == run_id] if "run_id" in q else q
    print(f"\nQuarantined rows in this run: {len(mine)}")
    for r in mine.head(10).itertuples():
        print(f"  [{r.source}] {r.row_id}: {r.reason}")
    print(f"\nTime taken: {seconds:.1f} s")


def cmd_demo(args: argparse.Namespace) -> int:
    _ensure_instance_home()
    from autopsy_assets.resources import CandleSource

    span = CandleSource().span()
    if span is None:
        print("the demo candle source is empty", file=sys.stderr)
        return 1
    first, last = span[0].strftime("%Y-%m-%d"), span[1].strftime("%Y-%m-%d")
    print(f"autopsy demo: materialising candles, insights and labeled_audits for {first} .. {last}")
    print("  data: REAL EURUSD hourly candles (backtesting package's sample, 2017-04-19..2018-02-07)")
    print("        + a GENERATED 1-minute market (EURUSD GBPUSD USDJPY XAUUSD BTCUSD, from 2018-03-05)")
    print("        + GENERATED demo insights, a few of them deliberately bad (to show the quarantine)")
    started = time.perf_counter()
    result = _execute("autopsy_job", first, last, None, {"autopsy/trigger": "demo"})
    seconds = time.perf_counter() - started
    store = _store()
    _print_summary(store, pd.Timestamp(first, tz="UTC"), pd.Timestamp(last, tz="UTC") + pd.Timedelta(days=1),
                   result.run_id, seconds)
    print(f"\nDagster run {result.run_id}: {'SUCCESS' if result.success else 'FAILURE'}")
    print(f"Instance: {os.environ['DAGSTER_HOME']}   Audit store: {store.url if hasattr(store, 'url') else ''}")
    print("Open the UI on the same instance with `make ui` (http://127.0.0.1:3000).")
    return 0 if result.success else 1


def _date(value: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def cmd_run(args: argparse.Namespace) -> int:
    _ensure_instance_home()
    from autopsy_assets.defs.partitions import FIRST_DAY

    store = _store()
    horizons = [h.strip().upper() for h in args.horizons.split(",") if h.strip()]
    bad = [h for h in horizons if h not in HORIZONS]
    if bad:
        print(f"unknown horizon(s) {', '.join(bad)}: expected {', '.join(HORIZONS)}", file=sys.stderr)
        return 2
    if args.insight_id:
        ins = store.read_insights(insight_ids=args.insight_id)
        missing = sorted(set(args.insight_id) - set(ins["insight_id"]))
        if missing:
            print(f"unknown insight id(s): {', '.join(missing)} (not in the audit store; materialise "
                  "their day's `insights` partition first)", file=sys.stderr)
            return 2
        if not args.force:
            done = store.current_audits(insight_ids=args.insight_id, horizons=horizons)
            settled = done[~done["outcome"].isin(["pending", "needs_review"])]
            if len(settled) == len(args.insight_id) * len(horizons):
                print("already audited (use --force to re-analyse):")
                print(settled[["insight_id", "horizon", "outcome", "exit_reason", "pnl_pct"]]
                      .to_string(index=False))
                return 0
        start = ins["created_at"].min().normalize()
        end = ins["created_at"].max().normalize() + pd.Timedelta(days=1)
    elif args.last_days:
        end = pd.Timestamp.now(tz="UTC").normalize() + pd.Timedelta(days=1)
        start = end - pd.Timedelta(days=args.last_days)
    elif args.from_date:
        start = args.from_date.normalize()
        end = (args.to_date or args.from_date).normalize() + pd.Timedelta(days=1)
    else:
        print("say which insights: --insight-id, --last-days or --from-date [--to-date]", file=sys.stderr)
        return 2
    start = max(start, pd.Timestamp(FIRST_DAY, tz="UTC"))
    if end <= start:
        print(f"the range ends before the first partition ({FIRST_DAY})", file=sys.stderr)
        return 2
    first, last = start.strftime("%Y-%m-%d"), (end - pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    config = {"horizons": horizons, "symbols": [s.upper() for s in args.symbol or []],
              "strategies": args.strategy or [], "insight_ids": args.insight_id or []}
    if args.dry_run:
        ins = store.read_insights(start, end, insight_ids=args.insight_id or None,
                                  symbols=config["symbols"] or None, strategies=config["strategies"] or None)
        print(f"dry run: {first} .. {last}: {len(ins)} insight(s) in the store x {len(horizons)} "
              f"horizon(s) would be audited; nothing launched")
        if len(ins):
            print(ins.groupby(["symbol", "strategy"]).size().rename("insights").to_string())
        return 0
    tags = {"autopsy/trigger": "cli", "autopsy/horizons": ",".join(horizons)}
    for key in ("symbol", "strategy"):
        if getattr(args, key):
            tags[f"autopsy/{key}"] = ",".join(getattr(args, key))
    started = time.perf_counter()
    result = _execute("label_job" if args.skip_rca else "autopsy_job", first, last,
                      {"ops": {"labeled_audits": {"config": config}}}, tags)
    _print_summary(store, start, end, result.run_id, time.perf_counter() - started)
    print(f"\nDagster run {result.run_id}: {'SUCCESS' if result.success else 'FAILURE'}")
    return 0 if result.success else 1


def cmd_quarantine(args: argparse.Namespace) -> int:
    q = _store().read_quarantine(source=args.source)
    if q.empty:
        print("quarantine is empty")
        return 0
    cols = [c for c in ("quarantined_at", "source", "row_id", "reason") if c in q]
    with pd.option_context("display.max_colwidth", 120, "display.width", 200):
        print(q[cols].tail(args.limit).to_string(index=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autopsy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the main job over the whole demo data span").set_defaults(fn=cmd_demo)
    r = sub.add_parser("run", help="audit insights (a real Dagster run)")
    r.add_argument("--insight-id", action="append", help="an insight to audit (repeatable)")
    r.add_argument("--last-days", type=int, help="insights created in the last N days")
    r.add_argument("--from-date", type=_date)
    r.add_argument("--to-date", type=_date)
    r.add_argument("--symbol", action="append", help="only this symbol (repeatable)")
    r.add_argument("--strategy", action="append", help="only this strategy (repeatable)")
    r.add_argument("--horizons", default=",".join(HORIZONS), help="comma list, e.g. 4H,24H")
    r.add_argument("--dry-run", action="store_true", help="show what would be audited; launch nothing")
    r.add_argument("--skip-rca", action="store_true", help="label only, no root-cause analysis")
    r.add_argument("--force", action="store_true",
                   help="with --insight-id: re-analyse even when every audit is already settled")
    r.set_defaults(fn=cmd_run)
    q = sub.add_parser("quarantine", help="show quarantined rows and why")
    q.add_argument("--source", choices=["insights", "candles", "news", "rules", "regimes"])
    q.add_argument("--limit", type=int, default=50)
    q.set_defaults(fn=cmd_quarantine)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

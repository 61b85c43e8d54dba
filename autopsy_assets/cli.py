"""The `autopsy` command: run audits as real Dagster runs on the configured instance.

    autopsy demo                      the whole demo span (what `make run` does)
    autopsy run --from-date 2018-03-05 --to-date 2018-03-09 --symbol EURUSD --horizons 4H,24H
    autopsy run --insight-id INS-000123 --force
    autopsy run --last-days 7 --dry-run
    autopsy quarantine [--source insights]
    autopsy retrain request --strategy ZenithEdge --by alice --reason "fp rate up"
    autopsy retrain list [--status pending_approval]      autopsy retrain show ID
    autopsy approve ID --reviewer bob [--notes TEXT]      autopsy reject ID --reviewer bob --notes TEXT
    autopsy rollback --strategy ZenithEdge --by bob --reason TEXT
    autopsy challenger set --strategy S --version 2 --by bob --reason "A/B"   (then: challenger promote)
    autopsy review [--insight-id ID --horizon 4H --reviewer NAME --decision confirmed]
    autopsy report                                        strategy health per strategy

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


def _run_job(
    job_name: str, run_config: dict | None = None, tags: dict | None = None, quiet: bool = False
):
    """Execute a job in-process on the configured instance (synchronous; the run shows in the
    UI). The console shows warnings (quarantine counts, failures), or nothing when ``quiet``: a
    command that reports a refusal in one sentence leaves the trace to the UI."""
    import dagster as dg

    from autopsy_assets.definitions import defs

    level = os.environ.get("AUTOPSY_LOG_LEVEL", "CRITICAL" if quiet else "WARNING")
    config = {"loggers": {"console": {"config": {"log_level": level}}}, **(run_config or {})}
    with dg.DagsterInstance.get() as instance:
        return defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, run_config=config, raise_on_error=False, tags=tags or {}
        )


def _execute(job_name: str, first_day: str, last_day: str, run_config: dict | None, tags: dict):
    """A partition range of an asset job in one run."""
    return _run_job(job_name, run_config, {RANGE_START: first_day, RANGE_END: last_day, **tags})


def _simulate(strategy: str, requested_by: str, reason: str, trigger: str):
    """Record a retrain request and simulate it in one in-process Dagster run."""
    config = {"strategy": strategy, "requested_by": requested_by, "reason": reason}
    return _run_job("retrain_simulation_job", {"ops": {"simulate_retrain": {"config": config}}},
                    {"autopsy/trigger": trigger, "autopsy/requested_by": requested_by},
                    quiet=True)


def _approve(request_id: str, reviewer: str, notes: str, trigger: str):
    """Approve, train, register and promote in one in-process Dagster run."""
    config = {"request_id": request_id, "reviewer": reviewer, "notes": notes}
    return _run_job("retrain_training_job", {"ops": {"train_approved": {"config": config}}},
                    {"autopsy/trigger": trigger, "autopsy/reviewer": reviewer}, quiet=True)


def _store():
    from autopsy_assets.resources import AuditStoreResource

    return AuditStoreResource().get()


def _print_summary(
    store, start: pd.Timestamp, end: pd.Timestamp, run_id: str, seconds: float
) -> None:
    summary = store.outcome_summary(start, end)
    print("\nAudits per horizon and outcome (current rows):")
    if summary.empty:
        print("  none")
    else:
        table = (
            summary.pivot_table(
                index="horizon", columns="outcome", values="count", aggfunc="sum", fill_value=0
            )
            if "count" in summary
            else summary
        )
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
    print(
        "  data: REAL EURUSD hourly candles (backtesting package's sample, 2017-04-19..2018-02-07)"
    )
    print(
        "        + a GENERATED 1-minute market (EURUSD GBPUSD USDJPY XAUUSD BTCUSD, from 2018-03-05)"
    )
    print(
        "        + GENERATED demo insights, a few of them deliberately bad (to show the quarantine)"
    )
    started = time.perf_counter()
    result = _execute("autopsy_job", first, last, None, {"autopsy/trigger": "demo"})
    seconds = time.perf_counter() - started
    store = _store()
    _print_summary(
        store,
        pd.Timestamp(first, tz="UTC"),
        pd.Timestamp(last, tz="UTC") + pd.Timedelta(days=1),
        result.run_id,
        seconds,
    )
    print(f"\nDagster run {result.run_id}: {'SUCCESS' if result.success else 'FAILURE'}")
    if not result.success:
        return 1
    ok = _demo_learning_loop(store)
    print(f"\nInstance: {os.environ['DAGSTER_HOME']}   Audit store: {store.url}")
    print(
        "Open the Dagster UI on the same instance with `make ui` (http://127.0.0.1:3000) and the "
        "MLflow registry with `make mlflow-ui` (http://127.0.0.1:5000)."
    )
    return 0 if ok else 1


def _demo_learning_loop(store) -> bool:
    """The whole retrain lifecycle once per strategy, as demo-requester and demo-reviewer, then
    the learning assets (explanations under the new champions, suggestions, health)."""
    registry, client = _registry()
    started = time.perf_counter()
    print("\nLearning loop: retrain request -> simulation -> approval -> champion, per strategy")
    strategies = sorted(store.read_insights()["strategy"].dropna().unique())
    for strategy in strategies:
        result = _simulate(strategy, "demo-requester", "first meta-model on the demo data", "demo")
        if not result.success:
            print(f"  {strategy}: simulation failed: {_failure_message(result)}")
            continue
        rid = result.output_for_node("simulate_retrain")
        info = registry.show_request(rid, client=client, store=store)
        gate = info.get("gate") or {}
        cut = ((info.get("metrics_after_simulation") or {}).get("overall") or {}).get("fp_cut")
        if not gate.get("passed"):
            print(
                f"  {strategy}: request {rid[:8]} simulated; the gate refuses promotion: "
                + "; ".join(gate.get("reasons", []))
            )
            continue
        approved = _approve(rid, "demo-reviewer", "demo approval", "demo")
        if not approved.success:
            print(f"  {strategy}: approval refused: {_failure_message(approved)}")
            continue
        info = registry.show_request(rid, client=client, store=store)
        print(
            f"  {strategy}: champion {info.get('model_version')} (request {rid[:8]}, "
            f"validation fp_cut {cut:.1%} at 95% of successes kept)"
        )
    learning = _run_job("learning_job", tags={"autopsy/trigger": "demo"})
    print(
        f"  learning assets (dataset, registry view, SHAP explanations, suggestions, health): "
        f"{'SUCCESS' if learning.success else 'FAILURE: ' + _failure_message(learning)}"
    )
    print(f"  learning loop took {time.perf_counter() - started:.1f} s")
    return learning.success


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
        print(
            f"unknown horizon(s) {', '.join(bad)}: expected {', '.join(HORIZONS)}", file=sys.stderr
        )
        return 2
    if args.insight_id:
        ins = store.read_insights(insight_ids=args.insight_id)
        missing = sorted(set(args.insight_id) - set(ins["insight_id"]))
        if missing:
            print(
                f"unknown insight id(s): {', '.join(missing)} (not in the audit store; materialise "
                "their day's `insights` partition first)",
                file=sys.stderr,
            )
            return 2
        if not args.force:
            done = store.current_audits(insight_ids=args.insight_id, horizons=horizons)
            settled = done[~done["outcome"].isin(["pending", "needs_review"])]
            if len(settled) == len(args.insight_id) * len(horizons):
                print("already audited (use --force to re-analyse):")
                print(
                    settled[
                        ["insight_id", "horizon", "outcome", "exit_reason", "pnl_pct"]
                    ].to_string(index=False)
                )
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
        print(
            "say which insights: --insight-id, --last-days or --from-date [--to-date]",
            file=sys.stderr,
        )
        return 2
    start = max(start, pd.Timestamp(FIRST_DAY, tz="UTC"))
    if end <= start:
        print(f"the range ends before the first partition ({FIRST_DAY})", file=sys.stderr)
        return 2
    first, last = start.strftime("%Y-%m-%d"), (end - pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    config = {
        "horizons": horizons,
        "symbols": [s.upper() for s in args.symbol or []],
        "strategies": args.strategy or [],
        "insight_ids": args.insight_id or [],
    }
    if args.dry_run:
        ins = store.read_insights(
            start,
            end,
            insight_ids=args.insight_id or None,
            symbols=config["symbols"] or None,
            strategies=config["strategies"] or None,
        )
        print(
            f"dry run: {first} .. {last}: {len(ins)} insight(s) in the store x {len(horizons)} "
            f"horizon(s) would be audited; nothing launched"
        )
        if len(ins):
            print(ins.groupby(["symbol", "strategy"]).size().rename("insights").to_string())
        return 0
    tags = {"autopsy/trigger": "cli", "autopsy/horizons": ",".join(horizons)}
    for key in ("symbol", "strategy"):
        if getattr(args, key):
            tags[f"autopsy/{key}"] = ",".join(getattr(args, key))
    started = time.perf_counter()
    result = _execute(
        "label_job" if args.skip_rca else "autopsy_job",
        first,
        last,
        {"ops": {"labeled_audits": {"config": config}}},
        tags,
    )
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


def _failure_message(result) -> str:
    """The error a failed in-process run raised, as the sentence a person needs."""
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE" and event.step_failure_data:
            err = event.step_failure_data.error
            while (
                err is not None and err.cause is not None and "LifecycleError" not in err.cls_name
            ):
                err = err.cause
            message = (err.message if err is not None else "").strip()
            return message.split("LifecycleError: ", 1)[-1]
    return "the run failed (see the Dagster UI)"


def _print_metrics(title: str, metrics: dict | None) -> None:
    if not metrics:
        print(f"  {title}: none")
        return
    overall = metrics.get("overall", metrics)
    keys = [
        k
        for k in ("fp_cut", "fp_cut_lower", "precision", "recall", "fpr", "expectancy", "n")
        if k in overall
    ]
    print(
        f"  {title}: "
        + ", ".join(
            f"{k} {overall[k]:.3g}" if isinstance(overall[k], float) else f"{k} {overall[k]}"
            for k in keys
        )
    )
    for symbol, m in sorted((metrics.get("per_symbol") or {}).items()):
        print(
            f"    {symbol:8s} "
            + ", ".join(
                f"{k} {m[k]:.3g}"
                for k in ("fp_cut", "fpr", "expectancy")
                if isinstance(m.get(k), float)
            )
            + f", rows {m.get('n', '?')}"
        )


def _print_request(info: dict) -> None:
    print(
        f"request {info['request_id']}  strategy {info.get('strategy')}  status {info.get('status')}"
    )
    print(f"  requested by {info.get('requested_by')}: {info.get('reason')}")
    if info.get("reviewer"):
        print(f"  reviewed by {info.get('reviewer')}: {info.get('review_notes', '')}")
    _print_metrics("metrics_before (champion)", info.get("metrics_before"))
    _print_metrics("metrics_after_simulation (candidate)", info.get("metrics_after_simulation"))
    gate = info.get("gate") or {}
    if gate:
        print(f"  gate: {'PASSES' if gate.get('passed') else 'REFUSES'}")
        for reason in gate.get("reasons", []):
            print(f"    - {reason}")
    if info.get("model_version"):
        print(f"  model version: {info['model_version']}")
    for t in info.get("trail", []):
        print(
            f"  {t.get('at')}  {t.get('from_status') or '-':>16} -> {t.get('to_status'):<16} "
            f"by {t.get('actor')}  {t.get('reason') or ''}"
        )


def _registry():
    from autopsy_assets import registry
    from autopsy_assets.resources import MlflowResource

    return registry, MlflowResource().client()


def cmd_retrain(args: argparse.Namespace) -> int:
    _ensure_instance_home()
    registry, client = _registry()
    store = _store()
    if args.action == "list":
        frame = registry.list_requests(
            status=args.status, strategy=args.strategy, client=client, store=store
        )
        print(frame.to_string(index=False) if len(frame) else "no retrain requests")
        return 0
    if args.action == "show":
        _print_request(registry.show_request(args.request_id, client=client, store=store))
        return 0
    # request: record it, then simulate at once in an in-process Dagster run
    result = _simulate(args.strategy, args.by, args.reason, "cli")
    if not result.success:
        print(f"refused: {_failure_message(result)}", file=sys.stderr)
        return 1
    rid = result.output_for_node("simulate_retrain")
    print(rid)
    _print_request(registry.show_request(rid, client=client, store=store))
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    _ensure_instance_home()
    result = _approve(args.request_id, args.reviewer, args.notes or "", "cli")
    if not result.success:
        print(f"refused: {_failure_message(result)}", file=sys.stderr)
        return 1
    registry, client = _registry()
    _print_request(registry.show_request(args.request_id, client=client, store=_store()))
    return 0


def _lifecycle_step(step, done: str) -> int:
    """Run a registry step; a refusal (LifecycleError) is one sentence on stderr, exit code 1."""
    _ensure_instance_home()
    registry, client = _registry()
    try:
        out = step(registry, client, _store())
    except registry.LifecycleError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(done.format(out=out))
    return 0


def cmd_reject(args: argparse.Namespace) -> int:
    return _lifecycle_step(
        lambda registry, client, store: registry.reject(
            args.request_id, args.reviewer, args.notes, store, client=client
        ),
        f"request {args.request_id} rejected by {args.reviewer}",
    )


def cmd_rollback(args: argparse.Namespace) -> int:
    return _lifecycle_step(
        lambda registry, client, store: registry.rollback(
            args.strategy, args.by, args.reason, store, client=client
        ),
        f"{args.strategy}: champion rolled back: {{out}}",
    )


def cmd_challenger(args: argparse.Namespace) -> int:
    if args.action == "set":
        return _lifecycle_step(
            lambda registry, client, store: registry.set_challenger(
                args.strategy, args.version, args.by, args.reason, store, client=client
            ),
            f"{args.strategy}: challenger set to version {args.version} ({{out}})",
        )

    def promote(registry, client, store):
        audits = store.current_audits(horizons=[args.horizon])
        return registry.promote_challenger(
            args.strategy,
            args.by,
            args.reason,
            registry.arm_audits(audits, store, args.strategy),
            store,
            client=client,
        )

    return _lifecycle_step(promote, f"{args.strategy}: challenger promoted to champion ({{out}})")


def cmd_review(args: argparse.Namespace) -> int:
    """List the audits a person must look at (needs_review, ambiguous), or record a review."""
    store = _store()
    if args.insight_id:
        if not args.reviewer:
            print("recording a review needs --reviewer NAME", file=sys.stderr)
            return 2
        try:
            rid = store.add_review(args.insight_id, args.horizon, args.reviewer, args.notes,
                                   decision=args.decision)
        except ValueError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 1
        print(f"review {rid}: {args.insight_id} {args.horizon} {args.decision} by {args.reviewer}")
        return 0
    audits = store.current_audits()
    todo = audits[(audits["outcome"] == "needs_review") | audits["ambiguous"]]
    done = store.read_reviews()
    if len(done):
        seen = set(zip(done["insight_id"], done["horizon"]))
        todo = todo[[k not in seen for k in zip(todo["insight_id"], todo["horizon"])]]
    if todo.empty:
        print("nothing to review")
        return 0
    cols = ["insight_id", "horizon", "symbol", "outcome", "ambiguous", "needs_review_reason"]
    with pd.option_context("display.max_colwidth", 100, "display.width", 200):
        print(todo[cols].head(args.limit).to_string(index=False))
    print(f"\n{len(todo)} audit(s) to review; record one with "
          "`autopsy review --insight-id ID --horizon 4H --reviewer NAME --decision confirmed`")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from autopsy_assets import api

    store = _store()
    audits = store.current_audits(horizons=[args.horizon])
    if audits.empty:
        print("no audits yet: run `autopsy demo` or `autopsy run` first")
        return 0
    causes = store.read_rca(primary_only=True)
    table = api.strategy_health(audits, causes if len(causes) else None, horizon=args.horizon)
    cols = [
        c
        for c in (
            "strategy",
            "symbol",
            "n_audited",
            "success_rate",
            "false_positive_rate",
            "expectancy",
            "avg_drawdown",
            "avg_duration_minutes",
            "news_impact_ratio",
            "regime_drift_ratio",
        )
        if c in table
    ]
    level = "strategy" if not args.by_symbol else "strategy_symbol"
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(table.loc[table["level"] == level, cols].to_string(index=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="autopsy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the main job over the whole demo data span").set_defaults(
        fn=cmd_demo
    )
    r = sub.add_parser("run", help="audit insights (a real Dagster run)")
    r.add_argument("--insight-id", action="append", help="an insight to audit (repeatable)")
    r.add_argument("--last-days", type=int, help="insights created in the last N days")
    r.add_argument("--from-date", type=_date)
    r.add_argument("--to-date", type=_date)
    r.add_argument("--symbol", action="append", help="only this symbol (repeatable)")
    r.add_argument("--strategy", action="append", help="only this strategy (repeatable)")
    r.add_argument("--horizons", default=",".join(HORIZONS), help="comma list, e.g. 4H,24H")
    r.add_argument(
        "--dry-run", action="store_true", help="show what would be audited; launch nothing"
    )
    r.add_argument("--skip-rca", action="store_true", help="label only, no root-cause analysis")
    r.add_argument(
        "--force",
        action="store_true",
        help="with --insight-id: re-analyse even when every audit is already settled",
    )
    r.set_defaults(fn=cmd_run)
    q = sub.add_parser("quarantine", help="show quarantined rows and why")
    q.add_argument("--source", choices=["insights", "candles", "news", "rules", "regimes"])
    q.add_argument("--limit", type=int, default=50)
    q.set_defaults(fn=cmd_quarantine)
    rt = sub.add_parser("retrain", help="retrain requests: request, list, show")
    rts = rt.add_subparsers(dest="action", required=True)
    req = rts.add_parser("request", help="record a request and simulate it at once")
    req.add_argument("--strategy", required=True)
    req.add_argument("--by", required=True, help="who asks")
    req.add_argument("--reason", required=True)
    lst = rts.add_parser("list")
    lst.add_argument("--status")
    lst.add_argument("--strategy")
    shw = rts.add_parser("show")
    shw.add_argument("request_id")
    rt.set_defaults(fn=cmd_retrain)
    ap = sub.add_parser("approve", help="approve a simulated request: train, register, promote")
    ap.add_argument("request_id")
    ap.add_argument("--reviewer", required=True)
    ap.add_argument("--notes", default="")
    ap.set_defaults(fn=cmd_approve)
    rj = sub.add_parser("reject", help="reject a simulated request")
    rj.add_argument("request_id")
    rj.add_argument("--reviewer", required=True)
    rj.add_argument("--notes", required=True)
    rj.set_defaults(fn=cmd_reject)
    rb = sub.add_parser("rollback", help="move a strategy's champion back to the previous version")
    rb.add_argument("--strategy", required=True)
    rb.add_argument("--by", required=True)
    rb.add_argument("--reason", required=True)
    rb.set_defaults(fn=cmd_rollback)
    ch = sub.add_parser(
        "challenger",
        help="A/B: set a challenger version, or promote it when "
        "its arm is no worse than the champion's",
    )
    chs = ch.add_subparsers(dest="action", required=True)
    chset = chs.add_parser("set")
    chset.add_argument("--version", required=True)
    chpro = chs.add_parser("promote")
    chpro.add_argument("--horizon", default="24H")
    for sp in (chset, chpro):
        sp.add_argument("--strategy", required=True)
        sp.add_argument("--by", required=True)
        sp.add_argument("--reason", required=True)
    ch.set_defaults(fn=cmd_challenger)
    rv = sub.add_parser("review", help="audits that need a person (needs_review, ambiguous)")
    rv.add_argument("--insight-id")
    rv.add_argument("--horizon", default="24H")
    rv.add_argument("--reviewer")
    rv.add_argument("--decision", default="confirmed", choices=["confirmed", "relabel", "data_issue"])
    rv.add_argument("--notes", default="")
    rv.add_argument("--limit", type=int, default=30)
    rv.set_defaults(fn=cmd_review)
    rp = sub.add_parser("report", help="strategy health")
    rp.add_argument("--horizon", default="24H")
    rp.add_argument("--by-symbol", action="store_true")
    rp.set_defaults(fn=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

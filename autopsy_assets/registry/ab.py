"""A/B scoring between the champion and the challenger, arm comparison, and degradation of the
champion (issue 5 items 5 and 7).

The arm of an insight is `meta_model.arms_for(user_id, share)` (sha256 of the user id), shared by
scoring and audits. The agreed metric for arms and degradation is the false-positive rate of the
insights that were kept (published): failed / (succeeded + failed) among finished audits.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from autopsy_assets.registry.errors import LifecycleError
from autopsy_assets.registry.tracking import ClientLike, get_client, model_name
from autopsy_assets.registry.versions import aliases, load_meta_model

FINISHED = ("succeeded", "failed")


def score_with_ab(dataset: pd.DataFrame, strategy: str, share: float, store: Any = None, *,
                  client: ClientLike = None) -> pd.DataFrame:
    """Score `dataset` (build_dataset rows) with the strategy's champion, or with its challenger
    for the users `arms_for(user_id, share)` puts in the challenger arm (only when a challenger
    alias exists; otherwise every row is champion and the effective share is 0).

    Returns (index kept): insight_id, arm, success_probability, model_version. With `store`,
    the arms are recorded via `put_ab_assignments` (model_name, arm, share, model_version)."""
    from autopsy_assets.domain import meta_model as mm

    share = float(share)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share {share} is not a fraction from 0 to 1")
    c = get_client(client)
    name = model_name(strategy)
    live = aliases(name, client=c)
    champ_v, chall_v = live.get("champion"), live.get("challenger")
    if champ_v is None:
        raise LifecycleError(f"{name} has no champion to score with", request_id=name)
    champion = load_meta_model(f"models:/{name}/{champ_v}", client=c)
    challenger = load_meta_model(f"models:/{name}/{chall_v}", client=c) if chall_v else None
    effective = share if challenger is not None else 0.0
    scored = mm.score_ab(dataset, champion, challenger, effective)
    out = pd.DataFrame(index=dataset.index)
    out["insight_id"] = (dataset["insight_id"].astype(str).to_numpy()
                         if "insight_id" in dataset.columns else dataset.index.astype(str))
    out["arm"] = scored["arm"].to_numpy()
    out["success_probability"] = scored["success_probability"].to_numpy()
    out["model_version"] = np.where(out["arm"].to_numpy() == "challenger", chall_v or "",
                                    champ_v)
    out.attrs["model_name"] = name
    out.attrs["share"] = effective
    if store is not None and len(out):
        store.put_ab_assignments(pd.DataFrame({
            "insight_id": out["insight_id"].to_numpy(), "model_name": name,
            "arm": out["arm"].to_numpy(), "share": effective,
            "model_version": out["model_version"].to_numpy()}))
    return out


def _finished(audits: pd.DataFrame) -> pd.DataFrame:
    if "outcome" not in audits.columns:
        raise ValueError("audits lack the outcome column")
    a = audits
    if "is_current" in a.columns:
        a = a[a["is_current"].astype(bool)]
    return a[a["outcome"].astype(str).isin(FINISHED)]


def _fpr(a: pd.DataFrame) -> tuple[int, int, float]:
    failed = int((a["outcome"].astype(str) == "failed").sum())
    n = len(a)
    return n, failed, (failed / n if n else float("nan"))


def arm_audits(audits: pd.DataFrame, store: Any, strategy: str) -> pd.DataFrame:
    """Audits joined with the recorded A/B arm of their insight for the strategy's model."""
    arms = store.read_ab_assignments(model_name=model_name(strategy))
    return audits.merge(arms[["insight_id", "arm", "model_version"]], on="insight_id",
                        how="inner")


def compare_arms(audits: pd.DataFrame, *, min_rows: int = 30, tolerance: float = 0.0
                 ) -> tuple[bool, dict[str, Any]]:
    """(passed, evidence): the challenger arm is no worse than the champion arm on the agreed
    metric, the false-positive rate of finished audits (failed / (succeeded + failed)), within
    `tolerance` (a fraction), with at least `min_rows` finished audits per arm. `audits` needs
    `arm` and `outcome` columns (see `arm_audits`)."""
    if "arm" not in audits.columns:
        raise ValueError("audits lack the arm column (join them with the A/B assignments)")
    a = _finished(audits)
    ev: dict[str, Any] = {"metric": "false-positive rate (failed / finished)",
                          "min_rows": min_rows, "tolerance": tolerance}
    for arm in ("champion", "challenger"):
        n, failed, rate = _fpr(a[a["arm"].astype(str) == arm])
        ev[arm] = {"n": n, "failed": failed, "fpr": rate}
    ch, cl = ev["champion"], ev["challenger"]
    if min(ch["n"], cl["n"]) < min_rows:
        ev["reason"] = (f"too few finished audits to compare the arms (champion {ch['n']}, "
                        f"challenger {cl['n']}; {min_rows} each needed)")
        return False, ev
    passed = cl["fpr"] <= ch["fpr"] + tolerance
    ev["reason"] = (f"challenger false-positive rate {cl['fpr']:.1%} on {cl['n']} audits vs "
                    f"champion {ch['fpr']:.1%} on {ch['n']}: "
                    + ("no worse" if passed else "worse"))
    return passed, ev


def _validation_fpr(champion_metrics: Any) -> float:
    """The champion's validation false-positive rate from its metrics: MetaModel.metrics
    ({"overall": {"fpr": ...}}), a MetaModel, or the flattened run metrics of
    `model_versions_frame` ({"val.fpr": ...})."""
    m = getattr(champion_metrics, "metrics", champion_metrics)
    if not isinstance(m, Mapping):
        raise ValueError("champion_metrics must be the champion's metrics dict (or a MetaModel)")
    overall = m.get("overall")
    v = overall.get("fpr") if isinstance(overall, Mapping) else None
    if v is None:
        v = m.get("fpr", m.get("val.fpr"))
    if v is None:
        raise ValueError("the champion's metrics have no validation false-positive rate (fpr)")
    return float(v)


def champion_degraded(audits_recent: pd.DataFrame, champion_metrics: Any, margin: float, *,
                      min_rows: int = 30) -> tuple[bool, dict[str, Any]]:
    """(degraded, evidence): the false-positive rate of the finished audits in the trailing
    window `audits_recent` (failed / (succeeded + failed), current rows) exceeds the champion's
    validation figure (`metrics["overall"]["fpr"]`, or `val.fpr` of the flattened run metrics)
    by more than `margin` (a fraction: 0.05 = 5 points). Never degraded on fewer than
    `min_rows` finished audits."""
    base = _validation_fpr(champion_metrics)
    a = _finished(audits_recent)
    n, failed, rate = _fpr(a)
    ev: dict[str, Any] = {"n": n, "failed": failed, "fpr_recent": rate,
                          "fpr_validation": base, "margin": float(margin),
                          "min_rows": min_rows}
    for col in ("created_at", "exit_time"):
        if col in a.columns and len(a):
            t = pd.to_datetime(a[col], utc=True)
            ev["window"] = {"column": col, "start": t.min().isoformat(),
                            "end": t.max().isoformat()}
            break
    if n < min_rows:
        ev["reason"] = f"only {n} finished audits in the window ({min_rows} needed)"
        return False, ev
    degraded = bool(rate - base > margin)
    ev["reason"] = (f"false-positive rate {rate:.1%} on {n} recent audits vs {base:.1%} on "
                    f"validation: {'up' if rate >= base else 'down'} "
                    f"{abs(rate - base) * 100:.1f} points "
                    + (f"(> {margin * 100:.1f}-point margin)" if degraded
                       else f"(within the {margin * 100:.1f}-point margin)"))
    return degraded, ev

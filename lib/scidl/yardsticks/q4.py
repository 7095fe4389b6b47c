"""Q4: explain an input -> output behaviour mechanistically within a time budget, every claim checked
by an intervention, over many models.

A phenomenon plugs in with `explain(run)` (a `scidl.explain.Explanation` whose faithfulness is
measured by an intervention inside the network, random mechanisms drawn from all the candidates)
and `check_claims(run, explanation)` (one intervention with a predicted outcome per claim), both
registered on its `scidl.registry.Phenomenon`.

`score_model(run, budget_s)` times the explanation and its checks together from hand-over; a model
*passes* when that took at most `budget_s`, at least `min_checked` of its claims hold, and the
faithfulness claim is among those that hold. `summarize(rows)` reports the share of models that pass
(Clopper-Pearson interval) and the mean faithfulness by intervention (t-interval), beside the best
random mechanism's and the oracle's.
"""
from __future__ import annotations

import math
import time

import pandas as pd

from scidl.errors import ScidlError, check_bool, check_number
from scidl.registry import phenomenon_of
from scidl.yardsticks.protocol import mean_interval, share


def score_model(run, budget_s: float = 60.0, min_checked: float = 0.8) -> dict:
    """Return one model's Q4 row: seconds, within_budget, claims, checked (share that hold), faithful
    (the faithfulness claim holds), passed, faithfulness (by intervention), best_random, oracle and
    the checks table (`table`); a model with no explanation gets passed False and the reason."""
    if not hasattr(run, "config") or not hasattr(run, "load_model") or not hasattr(run, "hash"):
        raise ScidlError(f"run={run!r:.200} is not allowed: must be a stored Run (scidl.train or RunStore.load)")
    budget_s = check_number("budget_s", budget_s, 0, low_open=True)
    min_checked = check_number("min_checked", min_checked, 0, 1)
    phenomenon = phenomenon_of(run.config)
    if phenomenon.explain is None or phenomenon.check_claims is None:
        raise ScidlError(f"run of kind {phenomenon.kind!r} is not allowed: that phenomenon has no explain() "
                         "and check_claims() to score")
    start = time.perf_counter()
    try:
        explanation = phenomenon.explain(run)
        table = phenomenon.check_claims(run, explanation)
    except ScidlError as err:  # no explanation (a model that learned nothing): scored, not skipped
        seconds = time.perf_counter() - start
        table = pd.DataFrame({"claim": ["an explanation"], "predicted": ["-"], "observed": [str(err)], "passed": [False]})
        return {"run": run.hash, "seconds": seconds, "within_budget": seconds <= budget_s, "claims": 1, "checked": 0.0,
                "faithful": False, "passed": False, "faithfulness": math.nan, "best_random": math.nan,
                "oracle": math.nan, "table": table}
    seconds = time.perf_counter() - start
    faithful = bool(table[table.claim.str.contains("faithful")].passed.all()) and table.claim.str.contains("faithful").any()
    checked = float(table.passed.mean())
    f = explanation.faithfulness
    return {"run": run.hash, "seconds": seconds, "within_budget": seconds <= budget_s, "claims": len(table),
            "checked": checked, "faithful": faithful,
            "passed": seconds <= budget_s and checked >= min_checked and faithful,
            "faithfulness": explanation.score, "best_random": explanation.random_score,
            "oracle": float(f.get("oracle_score", math.nan)), "table": table}


ROW_KEYS = {"passed", "seconds", "checked", "faithfulness", "best_random", "oracle"}


def summarize(rows: list[dict]) -> dict:
    """Return the share of models that pass (with its interval), the mean faithfulness by
    intervention over the models that have an explanation (with its interval), the mean best
    random mechanism's, the mean oracle's, and the slowest model's seconds."""
    if not isinstance(rows, (list, tuple)) or not rows:
        raise ScidlError(f"rows={rows!r:.200} is not allowed: Q4 is scored over a non-empty list of score_model rows")
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or not ROW_KEYS <= set(r):
            raise ScidlError(f"rows[{i}]={r!r:.200} is not allowed: must be a score_model row with {sorted(ROW_KEYS)}")
        check_bool(f"rows[{i}]['passed']", r["passed"])
        check_number(f"rows[{i}]['seconds']", r["seconds"], 0)
        check_number(f"rows[{i}]['checked']", r["checked"], 0, 1)
        for k in ("faithfulness", "best_random", "oracle"):  # NaN: no explanation (or no oracle)
            v = r[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isinf(v):
                raise ScidlError(f"rows[{i}][{k!r}]={v!r} is not allowed: must be a finite number or NaN")
    passed = share(r["passed"] for r in rows)
    scored = [r for r in rows if math.isfinite(r["faithfulness"])]
    faith = mean_interval([r["faithfulness"] for r in scored]) if scored else {"mean": math.nan, "low": math.nan,
                                                                             "high": math.nan, "n": 0}
    oracles = [r["oracle"] for r in scored if math.isfinite(r["oracle"])]
    return {"models": len(rows), "passed": passed, "faithfulness": faith,
            "best_random": float(pd.Series([r["best_random"] for r in scored], dtype=float).mean()),
            "oracle": float(pd.Series(oracles, dtype=float).mean()) if oracles else math.nan,
            "checked": float(pd.Series([r["checked"] for r in rows]).mean()),
            "max_seconds": max(r["seconds"] for r in rows)}

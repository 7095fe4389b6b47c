"""Operational definitions of phenomena on metric curves (grokking first)."""
from __future__ import annotations

import math

import pandas as pd

THRESHOLD = 0.99  # accuracy that counts as "learned"


def first_step(metrics: pd.DataFrame, column: str, threshold: float = THRESHOLD) -> int | None:
    """Return the first evaluated step where `column` >= threshold, or None if never."""
    hit = metrics.loc[metrics[column] >= threshold, "step"]
    return int(hit.iloc[0]) if len(hit) else None


def grokking_summary(metrics: pd.DataFrame, threshold: float = THRESHOLD) -> dict[str, float | int | None]:
    """Return memorization_step, grok_step, grok_gap and grok_ratio (grok / memorization step).

    memorization_step: first step with train accuracy >= threshold.
    grok_step: first step with test accuracy >= threshold.
    """
    mem = first_step(metrics, "train_acc", threshold)
    grok = first_step(metrics, "test_acc", threshold)
    both = mem is not None and grok is not None
    return {
        "memorization_step": mem,
        "grok_step": grok,
        "grok_gap": grok - mem if both else None,
        "grok_ratio": grok / max(mem, 1) if both else math.nan,
    }


def is_grokking(metrics: pd.DataFrame, min_ratio: float = 5.0) -> bool:
    """Return whether test accuracy reached the threshold at least `min_ratio`x later than train."""
    ratio = grokking_summary(metrics)["grok_ratio"]
    return not math.isnan(ratio) and ratio >= min_ratio


PHASES = ("comprehension", "grokking", "memorization", "confusion")


def classify_phase(metrics: pd.DataFrame, min_ratio: float = 5.0, threshold: float = THRESHOLD) -> str:
    """Return the run's phase (Liu et al. 2022), from when train/test accuracy reach `threshold`:

    comprehension: both, test within `min_ratio` x the memorization step;
    grokking: both, test later than that; memorization: train only; confusion: not even train.
    """
    if metrics["train_loss"].isna().any() or "train_acc" not in metrics or metrics["train_acc"].isna().all():
        return "diverged"
    s = grokking_summary(metrics, threshold)
    if s["memorization_step"] is None:
        return "confusion"
    if s["grok_step"] is None:
        return "memorization"
    return "grokking" if s["grok_ratio"] >= min_ratio else "comprehension"


def precursor_leads(metrics: pd.DataFrame, jump_acc: float = 0.5) -> dict[str, int | None]:
    """Return how many steps before the test-accuracy jump (first test_acc >= jump_acc) each
    statistic turns: weight_norm and test_loss peak (max before the jump), train_loss bottoms out.

    A positive lead means the statistic moved before test accuracy did; None if there is no jump.
    """
    jump = first_step(metrics, "test_acc", jump_acc)
    if jump is None:
        return {"jump_step": None, "weight_norm_peak_lead": None, "test_loss_peak_lead": None}
    before = metrics[metrics.step <= jump].set_index("step")
    return {"jump_step": jump,
            "weight_norm_peak_lead": jump - int(before.weight_norm.idxmax()),
            "test_loss_peak_lead": jump - int(before.test_loss.idxmax())}


def precursor_table(long: pd.DataFrame, jump_acc: float = 0.5) -> pd.DataFrame:
    """Return precursor_leads for every run of a long metrics frame (one row per `hash`)."""
    rows = [{"hash": h, **precursor_leads(m, jump_acc)} for h, m in long.groupby("hash", sort=False)]
    return pd.DataFrame(rows, columns=["hash", "jump_step", "weight_norm_peak_lead", "test_loss_peak_lead"])

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

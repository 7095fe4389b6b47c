"""Grokking's operational definition on metric curves: memorization and grok steps, the phase of a
run (Liu et al. 2022), loss spikes and precursors of the test-accuracy jump."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scidl.errors import ScidlError, check_frame, check_number

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
    check_frame("metrics", metrics, ("step", "train_acc", "test_acc"))
    check_number("threshold", threshold, 0, 1, low_open=True)
    mem = first_step(metrics, "train_acc", threshold)
    grok = first_step(metrics, "test_acc", threshold)
    both = mem is not None and grok is not None
    return {
        "memorization_step": mem,
        "grok_step": grok,
        "grok_gap": grok - mem if both else None,
        "grok_ratio": grok / max(mem, 1) if both else math.nan,
    }


def max_spike_ratio(metrics: pd.DataFrame, threshold: float = THRESHOLD) -> float:
    """Return the largest train loss after memorization divided by its running minimum before that
    step (1.0: the loss never rose). Float32 log-softmax shows spikes of orders of magnitude once the
    loss nears 1e-7 (Nanda et al. 2023, App.; the "slingshot" of Thilak et al. 2022)."""
    mem = first_step(metrics, "train_acc", threshold)
    if mem is None:
        raise ScidlError("metrics without a memorization step are not allowed: train accuracy never "
                         f"reached {threshold}, so there is no 'after memorization'")
    loss = metrics.loc[metrics.step >= mem, "train_loss"].to_numpy(dtype=float)
    if not np.isfinite(loss).all():
        raise ScidlError("train_loss with non-finite values after memorization is not allowed: the run "
                         "diverged, so its spike ratio is undefined")
    # a float32 loss can round to exactly 0: floor the minimum so a rise from 0 is a huge (finite) spike
    running_min = np.maximum(np.minimum.accumulate(loss)[:-1], np.finfo(float).tiny)
    return float(max((loss[1:] / running_min).max(), 1.0)) if len(loss) > 1 else 1.0


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
    loss = metrics["train_loss"]
    if loss.isna().any() or not np.isfinite(loss.to_numpy(dtype=float)).all() or "train_acc" not in metrics \
            or metrics["train_acc"].isna().all():
        return "diverged"
    s = grokking_summary(metrics, threshold)
    if s["memorization_step"] is None:
        return "confusion"
    if s["grok_step"] is None:
        return "memorization"
    return "grokking" if s["grok_ratio"] >= min_ratio else "comprehension"


def precursor_leads(metrics: pd.DataFrame, jump_acc: float = 0.5, shuffle_seed: int | None = None
                    ) -> dict[str, int | None]:
    """Return how many steps before the test-accuracy jump (first test_acc >= jump_acc) each
    statistic turns: weight_norm and test_loss peak (their maximum over the whole run, so a peak after
    the jump gives a negative lead). None if there is no jump.

    shuffle_seed: shuffle each statistic across evaluation steps first — the null of a statistic
    unrelated to training time, whose lead is as often negative as the jump is early.
    """
    jump = first_step(metrics, "test_acc", jump_acc)
    if jump is None:
        return {"jump_step": None, "weight_norm_peak_lead": None, "test_loss_peak_lead": None}
    m = metrics.set_index("step")[["weight_norm", "test_loss"]]
    if shuffle_seed is not None:
        rng = np.random.default_rng(shuffle_seed)
        m = m.apply(lambda col: rng.permutation(col.to_numpy()))
    return {"jump_step": jump,
            "weight_norm_peak_lead": jump - int(m.weight_norm.idxmax()),
            "test_loss_peak_lead": jump - int(m.test_loss.idxmax())}


def precursor_table(long: pd.DataFrame, jump_acc: float = 0.5, null_seed: int = 0) -> pd.DataFrame:
    """Return precursor_leads for every run of a long metrics frame (one row per `hash`), with the
    leads of the same statistics shuffled across steps (`*_null`) beside them."""
    rows = []
    for i, (h, m) in enumerate(long.groupby("hash", sort=False)):
        null = precursor_leads(m, jump_acc, shuffle_seed=null_seed + i)
        rows.append({"hash": h, **precursor_leads(m, jump_acc),
                     "weight_norm_peak_lead_null": null["weight_norm_peak_lead"],
                     "test_loss_peak_lead_null": null["test_loss_peak_lead"]})
    return pd.DataFrame(rows, columns=["hash", "jump_step", "weight_norm_peak_lead", "test_loss_peak_lead",
                                       "weight_norm_peak_lead_null", "test_loss_peak_lead_null"])


def summarize(metrics: pd.DataFrame, min_ratio: float = 5.0, threshold: float = THRESHOLD) -> dict:
    """Return grokking's operational definition of one run: grokking_summary (memorization_step,
    grok_step, grok_gap, grok_ratio) and its phase (classify_phase)."""
    check_number("min_ratio", min_ratio, 1)
    return {**grokking_summary(metrics, threshold), "phase": classify_phase(metrics, min_ratio, threshold)}


def evaluate(model, data, loss_dtype: str = "float64") -> dict[str, float]:
    """Return the metrics row grokking's definition reads: train/test loss and accuracy of the answer
    at the last position, over every pair of `data`."""
    import torch

    from scidl.train import split_metrics

    with torch.no_grad():
        return split_metrics(model.last_logits(data.tokens), data, loss_dtype)

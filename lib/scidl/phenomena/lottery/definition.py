"""The lottery ticket hypothesis, operationally (Frankle & Carbin 2019; Frankle et al. 2020).

One run: its train/test loss and accuracy and the share of its prunable weights that are nonzero
(`density`). `summarize` gives the final and best test accuracy and the step of the best (the
"early-stopping iteration" the papers compare). `shows(metrics)` is the per-run part of the definition:
the net learned the task (final test accuracy at least `min_test_acc`).

The phenomenon is defined over sets of runs at one density, over seeds (`winning`): a *winning ticket*
is a rewound subnetwork whose test accuracy is within `margin` of the dense net's and above each
control's (same mask reinitialised; random mask of the same per-layer density) by more than `beat`,
each judged on the interval over seeds, not on one run.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from scidl.errors import ScidlError, check_frame, check_number, check_numbers
from scidl.phenomena.lottery.task import Dataset


def training_loss(model, tokens: torch.Tensor, labels: torch.Tensor, loss_dtype: str = "float64") -> torch.Tensor:
    """Return the mean cross-entropy of a batch, log-softmax in `loss_dtype`."""
    return torch.nn.functional.cross_entropy(model(tokens).to(getattr(torch, loss_dtype)), labels)


def evaluate(model, data: Dataset, loss_dtype: str = "float64") -> dict[str, float]:
    """Return one metrics row: train/test loss and accuracy, and the nonzero share of prunable weights."""
    with torch.no_grad():
        logits = model(data.tokens).to(getattr(torch, loss_dtype))
        nll = torch.nn.functional.cross_entropy(logits, data.labels, reduction="none")
        right = logits.argmax(-1) == data.labels
        weights = [p for p in model.parameters() if p.dim() >= 2]
        nonzero = sum(int((p != 0).sum()) for p in weights) / sum(p.numel() for p in weights)
    row = {}
    for split, mask in (("train", data.is_train), ("test", ~data.is_train)):
        row[f"{split}_loss"] = float(nll[mask].mean())
        row[f"{split}_acc"] = float(right[mask].float().mean())
    row["density"] = float(nonzero)
    return row


def summarize(metrics: pd.DataFrame) -> dict:
    """Return final_test_acc, best_test_acc, best_step (its first step) and the final density."""
    check_frame("metrics", metrics, ("step", "test_acc"), finite=("step",))
    m = metrics.dropna(subset=["test_acc"])
    if m.empty:
        raise ScidlError("metrics with no test accuracy are not allowed: the run never evaluated")
    best = int(m.test_acc.to_numpy().argmax())
    return {"final_test_acc": float(m.test_acc.iloc[-1]), "best_test_acc": float(m.test_acc.iloc[best]),
            "best_step": int(m.step.iloc[best]),
            "density": float(m.density.iloc[-1]) if "density" in m else math.nan}


def shows(metrics: pd.DataFrame, min_test_acc: float = 0.3) -> bool:
    """Return whether the run learned the task: final test accuracy >= `min_test_acc` (chance: 0.1)."""
    check_number("min_test_acc", min_test_acc, 0, 1)
    return summarize(metrics)["final_test_acc"] >= min_test_acc


def winning(ticket: list[float], dense: list[float], controls: dict[str, list[float]], margin: float = 0.02,
            beat: float = 0.0, level: float = 0.95) -> dict:
    """Return whether a ticket wins at one density, from test accuracies over seeds: `matches` when the
    interval of (ticket - dense mean) lies above -margin, `beats[name]` when the interval of (ticket -
    control) lies above `beat` (paired by seed when the lists align, else by means), `wins` when both
    hold for every control. Intervals are t intervals over seeds (at least 2 each)."""
    from scidl.hypotheses import mean_ci

    ticket = check_numbers("ticket", ticket, 0, 1, min_len=2)
    dense = check_numbers("dense", dense, 0, 1, min_len=2)
    check_number("margin", margin, 0, 1)
    check_number("beat", beat, -1, 1)
    out = {"ticket": float(np.mean(ticket)), "dense": float(np.mean(dense))}
    _, low, high = mean_ci([t - float(np.mean(dense)) for t in ticket], level)
    out["gap_to_dense"], out["gap_to_dense_ci"] = float(np.mean(ticket) - np.mean(dense)), (low, high)
    out["matches"] = bool(low > -margin)
    out["beats"], out["gaps"] = {}, {}
    for name, values in controls.items():
        values = check_numbers(f"controls[{name!r}]", values, 0, 1, min_len=2)
        diffs = [t - c for t, c in zip(ticket, values)] if len(values) == len(ticket) else \
            [t - float(np.mean(values)) for t in ticket]
        mean, lo, hi = mean_ci(diffs, level)
        out["gaps"][name] = (float(mean), lo, hi)
        out["beats"][name] = bool(lo > beat)
    out["wins"] = out["matches"] and bool(controls) and all(out["beats"].values())
    return out

"""Addition's operational definition (Quirke & Barez 2023; Lee et al. 2023): per-answer-digit
accuracy and loss curves, the step at which each digit is learned, and accuracy by carry type. The
phenomenon: the answer digits are learned at distinct steps (and carries after the digits they feed).

Digits are indexed from the units digit up: d0 is the units digit, d{n_digits} the carry-out.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from scidl.errors import ScidlError, check_frame, check_int, check_number
from scidl.phenomena.addition.task import CARRY_TYPES, Dataset

THRESHOLD = 0.99  # accuracy that counts as "learned"
EVAL_CHUNK = 1024  # rows per evaluation forward (fits in cache; one 10^4-row forward is twice as slow)


def answer_loss(logits: torch.Tensor, labels: torch.Tensor, loss_dtype: str = "float64") -> torch.Tensor:
    """Return the per-row, per-answer-digit cross-entropy (n, n_answers), log-softmax in `loss_dtype`."""
    logprobs = logits.to(getattr(torch, loss_dtype)).log_softmax(dim=-1)
    return -logprobs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def training_loss(model, tokens: torch.Tensor, labels: torch.Tensor, loss_dtype: str = "float64") -> torch.Tensor:
    """Return the mean cross-entropy over rows and answer positions (the training loss)."""
    return answer_loss(model.answer_logits(model(tokens)), labels, loss_dtype).mean()


def evaluate(model, data: Dataset, loss_dtype: str = "float64") -> dict[str, float]:
    """Return one metrics row: train/test loss (mean over answer digits) and accuracy (whole answer
    right); per digit d{i} (units first) train/test loss and test accuracy; whole-answer test
    accuracy per carry type (`test_acc_no_carry`, ...; NaN where the test split has none)."""
    with torch.no_grad():  # in chunks: the same rows (bit for bit), half the time of one (10^4, ...) forward
        logits = torch.cat([model.answer_logits(model(t)) for t in data.tokens.split(EVAL_CHUNK)])
        # (n, n_answers, 10), carry-out first
    nll = answer_loss(logits, data.labels, loss_dtype).flip(-1)  # units first
    right = (logits.argmax(-1) == data.labels).flip(-1)
    row: dict[str, float] = {}
    for split, mask in (("train", data.is_train), ("test", ~data.is_train)):
        row[f"{split}_loss"] = float(nll[mask].mean())
        row[f"{split}_acc"] = float(right[mask].all(-1).float().mean())
    for i in range(nll.shape[1]):
        row[f"train_loss_d{i}"] = float(nll[data.is_train, i].mean())
        row[f"test_loss_d{i}"] = float(nll[~data.is_train, i].mean())
        row[f"test_acc_d{i}"] = float(right[~data.is_train, i].float().mean())
    for t, name in enumerate(CARRY_TYPES):
        mask = ~data.is_train & (data.carry_type == t)
        row[f"test_acc_{name}"] = float(right[mask].all(-1).float().mean()) if mask.any() else math.nan
    return row


def n_answer_digits(metrics: pd.DataFrame) -> int:
    """Return how many answer digits a metrics frame has columns for."""
    n = 0
    while f"test_acc_d{n}" in metrics:
        n += 1
    if n == 0:
        raise ScidlError("metrics without test_acc_d0 columns are not allowed: they are not an addition run's")
    return n


def learned_steps(metrics: pd.DataFrame, threshold: float = THRESHOLD) -> list[int | None]:
    """Return, per answer digit from the units digit up, the first evaluated step whose test accuracy
    of that digit is >= threshold (None if never)."""
    check_frame("metrics", metrics, ("step", "test_acc_d0"))
    check_number("threshold", threshold, 0, 1, low_open=True)
    out = []
    for i in range(n_answer_digits(metrics)):
        hit = metrics.loc[metrics[f"test_acc_d{i}"] >= threshold, "step"]
        out.append(int(hit.iloc[0]) if len(hit) else None)
    return out


def halfway_steps(metrics: pd.DataFrame, split: str = "train") -> list[int | None]:
    """Return, per answer digit from the units digit up, the first evaluated step at which that
    digit's loss is halfway down on a log scale: at or below the geometric mean of its first and its
    lowest value (Nanda's reading of the 5-digit run's per-token loss curves, which are read on log
    axes; halfway on a linear scale is reached within the first ~100 steps by every digit here)."""
    check_frame("metrics", metrics, ("step", f"{split}_loss_d0"))
    out = []
    for i in range(n_answer_digits(metrics)):
        loss = metrics[f"{split}_loss_d{i}"].astype(float)
        half = math.sqrt(loss.iloc[0] * max(loss.min(), 1e-300))
        hit = metrics.loc[loss <= half, "step"]
        out.append(int(hit.iloc[0]) if len(hit) and loss.iloc[0] > loss.min() else None)
    return out


def learning_order(steps: list[int | None]) -> str:
    """Return the digits in the order they were learned, e.g. 'd2<d0<d1' ('=' joins ties; digits
    never learned are left out)."""
    learned = sorted((s, i) for i, s in enumerate(steps) if s is not None)
    out = ""
    for k, (s, i) in enumerate(learned):
        out += ("" if k == 0 else "=" if s == learned[k - 1][0] else "<") + f"d{i}"
    return out


def summarize(metrics: pd.DataFrame, threshold: float = THRESHOLD) -> dict:
    """Return addition's definition of one run: the step each digit is learned (`learned_d{i}`),
    the halfway steps of the train losses (`halfway_d{i}`), the order, whole-answer test accuracy
    per carry type at the end (`final_acc_{type}`), and whether the digits were learned at distinct
    steps, at least `MIN_GAP` evaluations apart (`distinct_steps`, `shows`)."""
    steps = learned_steps(metrics, threshold)
    halfway = halfway_steps(metrics)
    last = metrics.iloc[-1]
    out = {f"learned_d{i}": s for i, s in enumerate(steps)}
    out |= {f"halfway_d{i}": s for i, s in enumerate(halfway)}
    out["order"] = learning_order(steps)
    out |= {f"final_acc_{t}": float(last.get(f"test_acc_{t}", math.nan)) for t in CARRY_TYPES}
    out["distinct_steps"] = shows(metrics, threshold)
    return out


MIN_GAP = 3  # evaluation intervals between any two digits' learned steps for them to count as distinct


def shows(metrics: pd.DataFrame, threshold: float = THRESHOLD, min_gap: int = MIN_GAP) -> bool:
    """Return whether the run shows the phenomenon: every answer digit learned, at distinct steps,
    any two of them at least `min_gap` evaluation intervals apart (the interval: the run's median
    step between evaluations). One interval apart is within the evaluation grid's resolution, a tie
    in all but name; 3 is the registered definition (notebook 07, ADD0)."""
    min_gap = check_int("min_gap", min_gap, 1)
    steps = learned_steps(metrics, threshold)
    if any(s is None for s in steps):
        return False
    evaluated = np.unique(metrics.step.to_numpy(dtype=float))
    interval = float(np.median(np.diff(evaluated))) if len(evaluated) > 1 else 1.0
    ordered = sorted(steps)
    return all(b - a >= min_gap * interval and b > a for a, b in zip(ordered, ordered[1:]))

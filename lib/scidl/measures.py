"""Progress measures (Nanda et al. 2023) over checkpoints: measure(model, ctx) -> float, run by one
generic loop; and the rule that splits training into memorization / circuit formation / cleanup.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from scidl import circuits, fourier
from scidl.store import Run
from scidl.tasks import Dataset, make_dataset
from scidl.train import weight_norm

SIGNS = {"add": 1, "sub": -1}  # ops whose logits are cos(w(a ± b − c)) in the Fourier algorithm


@dataclass(frozen=True)
class Context:
    """What measures need besides the model: the dataset (full grid order) and key frequencies."""

    data: Dataset
    key_freqs: tuple[int, ...]
    op: str


def trig_directions(p: int, freqs, sign: int) -> Tensor:
    """Return unit directions cos/sin(2πw(a + sign·b − c)/p) over the (a, b, c) grid: (2·|freqs|, p³)."""
    a, b, c = torch.meshgrid(*(torch.arange(p, dtype=torch.float64),) * 3, indexing="ij")
    dirs = []
    for w in freqs:
        angle = 2 * math.pi * w * (a + sign * b - c) / p
        dirs += [torch.cos(angle).flatten(), torch.sin(angle).flatten()]
    D = torch.stack(dirs) if dirs else torch.zeros(0, p**3, dtype=torch.float64)
    return D / D.norm(dim=1, keepdim=True).clamp_min(1e-30)


def split_logits(model, ctx: Context) -> tuple[Tensor, Tensor]:
    """Return (key-frequency part, rest) of the grid logits (p, p, p); the per-(a, b) mean goes to
    the rest. Only for add/sub, where the key directions are cos/sin(w(a ± b − c))."""
    L = circuits.grid_logits(model).double()
    p = L.shape[0]
    centred = L - L.mean(dim=2, keepdim=True)
    D = trig_directions(p, ctx.key_freqs, SIGNS[ctx.op])  # orthonormal for distinct freqs
    key = (D.T @ (D @ centred.flatten())).view(p, p, p)
    return key, L - key


def _loss_on(logits: Tensor, data: Dataset, rows: Tensor) -> float:
    p = logits.shape[0]
    flat = logits.reshape(p * p, p)
    idx = data.tokens[rows, 0] * p + data.tokens[rows, 1]
    return float(F.cross_entropy(flat[idx].float(), data.labels[rows]))


def restricted_loss(model, ctx: Context) -> float:
    """Loss on all pairs using only the key-frequency logit terms (plus each row's mean)."""
    if ctx.op not in SIGNS or not ctx.key_freqs:
        return math.nan
    key, rest = split_logits(model, ctx)
    mean = (key + rest).mean(dim=2, keepdim=True)
    return _loss_on(key + mean, ctx.data, torch.ones(len(ctx.data.labels), dtype=torch.bool))


def excluded_loss(model, ctx: Context) -> float:
    """Loss on the train pairs with the key-frequency logit terms removed."""
    if ctx.op not in SIGNS or not ctx.key_freqs:
        return math.nan
    _, rest = split_logits(model, ctx)
    return _loss_on(rest, ctx.data, ctx.data.is_train)


def gini(x: Tensor) -> float:
    """Gini coefficient of |x| (0: all equal; → 1: one entry holds everything)."""
    v = x.detach().abs().flatten().double().sort().values
    n = len(v)
    if n == 0 or v.sum() == 0:
        return 0.0
    cum = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((2 * cum - n - 1) * v).sum() / (n * v.sum()))


def gini_embedding(model, ctx: Context) -> float:
    """Gini of the embedding's energy per frequency (sparsity in the Fourier basis)."""
    return gini(circuits.embedding_energy(model))


def gini_neurons(model, ctx: Context) -> float:
    """Mean over neurons of the Gini of their variance fractions per frequency."""
    fractions = fourier.neuron_freq_fractions(circuits.neuron_acts(model))
    return sum(gini(row) for row in fractions) / len(fractions)


def _losses(model, ctx: Context) -> dict[str, float]:
    logits = model.last_logits(ctx.data.tokens)
    return {f"{s}_loss": float(F.cross_entropy(logits[m], ctx.data.labels[m]))
            for s, m in (("train", ctx.data.is_train), ("test", ~ctx.data.is_train))}


MEASURES: dict[str, Callable] = {
    "restricted_loss": restricted_loss,
    "excluded_loss": excluded_loss,
    "gini_embedding": gini_embedding,
    "gini_neurons": gini_neurons,
    "weight_norm": lambda model, ctx: weight_norm(model),
}


@torch.no_grad()
def progress_measures(run: Run, key_freqs: list[int] | None = None,
                      measures: tuple[str, ...] = tuple(MEASURES)) -> pd.DataFrame:
    """Return one row per checkpoint: step, train/test loss and each measure. Key frequencies
    default to those of the final checkpoint (the circuit we are tracking)."""
    key_freqs = key_freqs if key_freqs is not None else circuits.key_freqs(run.load_model())
    ctx = Context(make_dataset(run.config.task), tuple(key_freqs), run.config.task.op)
    rows = []
    for step in run.checkpoint_steps:
        model = run.load_model(step)
        rows.append({"step": step, **_losses(model, ctx),
                     **{name: MEASURES[name](model, ctx) for name in measures}})
    return pd.DataFrame(rows)


def detect_phases(metrics: pd.DataFrame, drop: float = 0.1) -> dict[str, int | None]:
    """Return the phase boundaries of a grokking run (metrics with step, train_acc, test_acc, test_loss).

    Rule: memorization ends at M, the first step with train accuracy >= 0.99; circuit formation
    runs from M until C, the first later step where test loss falls below `drop` x its maximum
    after M (test loss starts to collapse); cleanup runs from C until G, the first step with test
    accuracy >= 0.99.
    """
    from scidl.phenomena import first_step

    M = first_step(metrics, "train_acc")
    G = first_step(metrics, "test_acc")
    if M is None:
        return {"memorization_end": None, "circuit_formation_end": None, "cleanup_end": G}
    after = metrics[metrics.step >= M]
    peak = after.test_loss.max()
    peak_step = int(after.loc[after.test_loss.idxmax(), "step"])
    fallen = after[(after.step >= peak_step) & (after.test_loss <= drop * peak)]
    C = int(fallen.step.iloc[0]) if len(fallen) else None
    return {"memorization_end": M, "circuit_formation_end": C, "cleanup_end": G}


def first_crossing(table: pd.DataFrame, column: str, threshold: float, after: int = 0) -> int | None:
    """Return the first step > `after` where `column` exceeds `threshold`, or None."""
    hit = table[(table.step > after) & (table[column] > threshold)]
    return int(hit.step.iloc[0]) if len(hit) else None


def value_at(metrics: pd.DataFrame, column: str, step: int) -> float:
    """Return `column` at the last evaluated step <= `step`."""
    return float(metrics[metrics.step <= step][column].iloc[-1])

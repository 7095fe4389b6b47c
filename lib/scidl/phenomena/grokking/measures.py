"""Progress measures of Nanda et al. 2023 ("Progress measures for grokking via mechanistic
interpretability", §5.1) over checkpoints, run by one generic loop, and the phases they define (§5.2).

Every measure is `measure(model, ctx) -> float`. They follow the paper's code: the logits over all
(a, b) pairs are taken in the 2-D Fourier basis of the (a, b) grid, and for every output c the
components along cos(w(a ± b)) and sin(w(a ± b)) of the key frequencies w are kept or removed.
Losses are cross-entropies with a float64 log-softmax (`cross_entropy_high_precision`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from scidl.phenomena.grokking import circuits, fourier
from scidl.phenomena.grokking.model import embedding_matrix
from scidl.progressbar import bar as progress_bar
from scidl.store import Run
from scidl.phenomena.grokking.task import OPERATIONS, Dataset, make_dataset
from scidl.train import cross_entropy, split_metrics
from scidl.errors import ScidlError, check_frame, check_int, check_number, describe, not_allowed


class MeasureError(ScidlError):
    """A measure is undefined for this model or task; the message says which and why."""


@dataclass(frozen=True)
class Context:
    """What measures need besides the model: the dataset, the key frequencies, the operation, and
    (filled per checkpoint by `progress_measures`) the grid logits shared between measures."""

    data: Dataset
    key_freqs: tuple[int, ...]
    op: str
    logits: Tensor | None = None  # (p*p, p) float64, rows a*p + b

    def __post_init__(self) -> None:
        if not isinstance(self.data, Dataset):
            raise MeasureError(not_allowed("Context.data", self.data, "must be a Dataset (scidl.make_dataset)"))
        if not isinstance(self.op, str) or self.op not in OPERATIONS:
            raise MeasureError(not_allowed("Context.op", self.op, f"must be one of {sorted(OPERATIONS)}"))
        n = self.data.p ** 2
        if self.logits is not None and (not isinstance(self.logits, Tensor) or tuple(self.logits.shape) != (n, self.data.p)):
            raise MeasureError(not_allowed("Context.logits", describe(self.logits),
                                           f"must be a ({n}, {self.data.p}) tensor: the grid's logits"))
        try:
            freqs = fourier.check_freqs("key_freqs", self.key_freqs, self.data.p)
        except ScidlError as e:
            raise MeasureError(str(e)) from None
        object.__setattr__(self, "key_freqs", tuple(freqs))


def grid_logits(model, ctx: Context) -> Float[Tensor, "p*p p"]:
    """Return the last-position logits over every (a, b) pair (row a·p + b) in float64."""
    if ctx.logits is not None:
        return ctx.logits
    return circuits.grid_logits(model).flatten(0, 1).double()


def _sign(ctx: Context) -> int:
    if ctx.op not in fourier.SUM_SIGN:
        raise MeasureError(f"op={ctx.op!r} is not allowed for restricted/excluded loss: they are defined "
                           f"for {sorted(fourier.SUM_SIGN)} (logits built from cos/sin(w(a ± b)))")
    if not ctx.key_freqs:
        raise MeasureError("key_freqs=() is not allowed: the model has no key frequencies (no sparse "
                           "Fourier spectrum), so restricted and excluded loss are undefined")
    return fourier.SUM_SIGN[ctx.op]


def key_logit_components(logits: Float[Tensor, "p*p p"], key_freqs, sign: int = 1) -> Float[Tensor, "p*p p"]:
    """Return the part of the logits along cos/sin(w(a + sign·b)) for w in key_freqs, per output c."""
    p = logits.shape[1]
    D = fourier.sum_directions(p, key_freqs, sign)  # (2k, p*p), orthonormal rows
    return D.T @ (D @ logits)


def restricted_logits(logits: Float[Tensor, "p*p p"], key_freqs, sign: int = 1) -> Float[Tensor, "p*p p"]:
    """Return the key-frequency components plus the paper's bias correction: the mean over all
    inputs of what was dropped, added back per output c."""
    key = key_logit_components(logits, key_freqs, sign)
    return key + (logits - key).mean(dim=0, keepdim=True)


def _rows(data: Dataset, mask: Tensor | None = None) -> Tensor:
    """Return the grid row (a·p + b) of each pair of `data` (those in `mask`, or all)."""
    tokens = data.tokens if mask is None else data.tokens[mask]
    return tokens[:, 0] * data.p + tokens[:, 1]


def restricted_loss(model, ctx: Context) -> float:
    """Return the loss on all pairs when the logits keep only the key cos/sin(w(a ± b)) components
    (plus the per-output bias), as `calculate_trig_loss` in Nanda et al.'s code."""
    sign, logits = _sign(ctx), grid_logits(model, ctx)
    restricted = restricted_logits(logits, ctx.key_freqs, sign)[_rows(ctx.data)]
    return float(cross_entropy(restricted, ctx.data.labels))


def excluded_loss(model, ctx: Context) -> float:
    """Return the train loss when every key cos/sin(w(a ± b)) component is removed from the logits
    (all key frequencies at once, no bias correction), as in the paper's progress-measure figure."""
    sign, logits = _sign(ctx), grid_logits(model, ctx)
    excluded = logits - key_logit_components(logits, ctx.key_freqs, sign)
    mask = ctx.data.is_train
    return float(cross_entropy(excluded[_rows(ctx.data, mask)], ctx.data.labels[mask]))


def gini(x: Tensor) -> float:
    """Gini coefficient of |x| (0: all equal; (n-1)/n: one entry holds everything)."""
    v = x.detach().abs().flatten().double().sort().values
    n = len(v)
    if not torch.isfinite(v).all():
        raise MeasureError("x with non-finite entries is not allowed: the Gini coefficient is undefined")
    if n == 0 or v.sum() == 0:
        raise MeasureError(f"x of {n} entries summing to 0 is not allowed: the Gini coefficient is undefined")
    cum = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((2 * cum - n - 1) * v).sum() / (n * v.sum()))


def gini_W_E(model, ctx: Context) -> float:
    """Gini of the norms of the embedding's Fourier components (over the token axis; constant left
    out, an assumption: the paper's plots drop it and its code has no Gini function)."""
    return gini(fourier.fourier_component_norms(embedding_matrix(model)))


def gini_W_L(model, ctx: Context) -> float:
    """Gini of the norms of the Fourier components (over the output c) of the neuron-logit map
    W_L = W_out·W_U (d_mlp, p); constant left out as for W_E."""
    return gini(fourier.fourier_component_norms(circuits.neuron_logit_map(model).T))


def sum_squared_weights(model, ctx: Context) -> float:
    """Return the sum of squares of every parameter (the paper's "total sum of squared weights")."""
    return float(sum(p.detach().double().square().sum() for p in model.parameters()))


MEASURES: dict[str, Callable] = {
    "restricted_loss": restricted_loss,
    "excluded_loss": excluded_loss,
    "gini_W_E": gini_W_E,
    "gini_W_L": gini_W_L,
    "sum_squared_weights": sum_squared_weights,
}


@torch.no_grad()
def progress_measures(run: Run, key_freqs: list[int] | None = None,
                      measures: tuple[str, ...] = tuple(MEASURES), progress: bool = True) -> pd.DataFrame:
    """Return one row per checkpoint: step, train/test loss and accuracy, and each measure. Key
    frequencies default to those of the final checkpoint (the circuit we are tracking)."""
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise MeasureError(f"measures={unknown} is not allowed: must be among {list(MEASURES)}")
    key_freqs = key_freqs if key_freqs is not None else circuits.key_freqs(run.load_model())
    data = make_dataset(run.config.task)
    ctx = Context(data, tuple(key_freqs), run.config.task.op)
    rows, order = [], _rows(data)
    for step in progress_bar(run.checkpoint_steps, desc=f"measures {run.hash}", progress=progress):
        model = run.load_model(step)
        at = replace(ctx, logits=grid_logits(model, ctx))  # one forward, shared by every measure
        rows.append({"step": step, **split_metrics(at.logits[order], data),
                     **{name: MEASURES[name](model, at) for name in measures}})
    return pd.DataFrame(rows)


def _after(pm: pd.DataFrame, step: int) -> pd.DataFrame:
    return pm[pm.step >= step]


def detect_phases(pm: pd.DataFrame, fallen: float = 0.05, high: float = 0.5,
                  collapsed: float = 0.01) -> dict[str, int | bool | None]:
    """Return the phase boundaries of a grokking run, read off its progress measures `pm`
    (columns step, train_loss, test_loss, restricted_loss, excluded_loss, sum_squared_weights).

    The rule, after Nanda et al. §5.2:
    - memorization ends at M, the first checkpoint where the train loss is <= `fallen` x its value
      at step 0. The excluded loss should still be flat there (within 1 nat of the train loss):
      `excluded_flat_at_memorization`.
    - circuit formation runs from M to C, the last checkpoint after M where the test loss is still
      >= `high` x its maximum after M. Over it the restricted loss should fall and the excluded
      loss rise: `restricted_falls`, `excluded_rises`.
    - cleanup runs from C to G, the first checkpoint after C where the test loss is <= `collapsed`
      x that maximum. Over it the sum of squared weights should fall: `weights_fall_in_cleanup`.
    The boundaries are read off the train and test loss; the progress measures decide whether the
    phases are the paper's: `phases_ordered` is True only when M < C < G *and* all four measure
    conditions hold. Boundaries never reached are None.
    """
    check_frame("pm", pm, ("step", "train_loss", "test_loss", "restricted_loss", "excluded_loss",
                           "sum_squared_weights"), MeasureError)
    first = pm.iloc[0]
    mem = pm[pm.train_loss <= fallen * first.train_loss]
    M = int(mem.step.iloc[0]) if len(mem) else None
    out: dict[str, int | bool | None] = {"memorization_end": M, "circuit_formation_end": None,
                                         "cleanup_end": None}
    if M is None:
        return {**out, "phases_ordered": False}
    at = pm.set_index("step")
    after = _after(pm, M)
    peak = after.test_loss.max()
    C = int(after[after.test_loss >= high * peak].step.iloc[-1])
    done = _after(pm, C + 1)
    done = done[done.test_loss <= collapsed * peak]
    G = int(done.step.iloc[0]) if len(done) else None
    out.update(circuit_formation_end=C, cleanup_end=G,
               excluded_flat_at_memorization=bool(at.excluded_loss[M] - at.train_loss[M] < 1.0),
               restricted_falls=bool(at.restricted_loss[C] < at.restricted_loss[M]),
               excluded_rises=bool(at.excluded_loss[C] > at.excluded_loss[M]),
               weights_fall_in_cleanup=bool(G is not None and at.sum_squared_weights[G] < at.sum_squared_weights[C]),
               )
    checks = ("excluded_flat_at_memorization", "restricted_falls", "excluded_rises", "weights_fall_in_cleanup")
    out["phases_ordered"] = bool(G is not None and M < C < G and all(out[c] for c in checks))
    return out


def move_step(pm: pd.DataFrame, column: str, start: int, frac: float = 0.5, log: bool = True) -> int | None:
    """Return the checkpoint from which on `column` stays past `frac` of its change from `start` to
    the last checkpoint (on a log scale when `log`, as losses move by decades); None if it does not
    change. "Stays past", not "first past", so a noisy statistic does not move early by chance."""
    if start is None:
        raise MeasureError("start=None is not allowed: a move is measured from a step (no memorization step?)")
    check_frame("pm", pm, ("step", column), MeasureError)
    check_int("start", start, 0, error=MeasureError)
    check_number("frac", frac, 0, 1, low_open=True, error=MeasureError)
    after = _after(pm, start)
    if len(after) < 2:
        raise MeasureError(not_allowed("start", start, f"at least two checkpoints must follow it (the last "
                                                       f"is step {int(pm.step.max())})"))
    raw = after[column].to_numpy(dtype=float)
    if not np.isfinite(raw).all() or (log and (raw <= 0).any()):
        raise MeasureError(f"column={column!r} is not allowed here: it has non-finite values"
                           + (" or values <= 0 on a log scale" if log else ""))
    values = np.log(raw) if log else raw
    if values[-1] == values[0]:
        return None
    target = values[0] + frac * (values[-1] - values[0])
    short = np.flatnonzero((values - target) * np.sign(values[-1] - values[0]) < 0)  # not yet past
    return int(after.step.iloc[short[-1] + 1 if len(short) else 0])


def measure_leads(pm: pd.DataFrame, grok_step: int, start: int,
                  columns: tuple[str, ...] = ("restricted_loss", "excluded_loss", "test_loss")) -> dict[str, int | None]:
    """Return, per column, grok_step minus its move_step: how many steps the measure moves before
    test accuracy reaches the grokking threshold (negative: after). test_loss is the reference a
    measure has to beat: it moves with test accuracy by construction."""
    check_int("grok_step", grok_step, 0, error=MeasureError)
    moves = {c: move_step(pm, c, start) for c in columns}
    return {c: (grok_step - s if s is not None else None) for c, s in moves.items()}


def lead_null(pm: pd.DataFrame, column: str, grok_step: int, start: int, n: int = 1000,
              seed: int = 0) -> np.ndarray:
    """Return the leads of `column` with its post-`start` values shuffled across checkpoints, `n`
    times: the null distribution of a statistic with no relation to training time (can be < 0)."""
    rng = np.random.default_rng(seed)
    after = _after(pm, start).reset_index(drop=True)
    leads = []
    for _ in range(n):
        shuffled = after.assign(**{column: rng.permutation(after[column].to_numpy())})
        s = move_step(shuffled, column, start)
        leads.append(grok_step - s if s is not None else np.nan)
    return np.array(leads, dtype=float)


def normalized_accuracy(acc: float, p: int) -> float:
    """Return test accuracy as a fraction of the way from chance (1/p) to perfect: 0 at chance, 1 perfect."""
    return (acc - 1 / p) / (1 - 1 / p)


def accuracy_at_move(pm: pd.DataFrame, column: str, start: int, p: int, shuffles: int = 0,
                     seed: int = 0) -> float:
    """Return the chance-normalised test accuracy at the checkpoint where `column` moves (move_step
    from `start`). With `shuffles` > 0, the same for the median move step of `column` shuffled across
    checkpoints (the null: a statistic unrelated to training time). Raises MeasureError if undefined."""
    check_frame("pm", pm, ("step", "test_acc", column), MeasureError)
    check_int("p", p, 2, error=MeasureError)
    check_int("shuffles", shuffles, 0, error=MeasureError)
    if shuffles:
        rng, after = np.random.default_rng(seed), _after(pm, start)
        moves = [move_step(after.assign(**{column: rng.permutation(after[column].to_numpy())}), column, start)
                 for _ in range(shuffles)]
        moves = [m for m in moves if m is not None]
        step = int(after.step.iloc[(after.step - np.median(moves)).abs().argmin()]) if moves else None
    else:
        step = move_step(pm, column, start)
    if step is None:
        raise MeasureError(f"column={column!r} does not move after step {start}: the accuracy at its move is undefined")
    return normalized_accuracy(float(pm.set_index("step").test_acc[step]), p)

"""Scoring the understanding (issue 16's yardsticks): counted passes, Q3 localization under a budget,
and the statistics the scorecard reports.

- `PassCounter(model)`: counts the model's forward passes (calls of its forward) and backward
  passes (gradients that flow back through its output), by instrumenting the model itself, so a
  budget is measured, never asserted.
- `localize(...)`: Q3. Attribution patching (a clean and a corrupt forward, one backward) ranks every
  component; the `confirm` components with the largest estimates are then activation-patched (one
  forward each, reusing the clean cache), so the whole search costs 2 + confirm forward passes.
- `exhaustive_ablation(...)`: the ground truth, every component mean-ablated over a whole dataset
  (one forward each, not counted against any budget).
- `localization_scores(...)`: top-k recall, Spearman rank correlation and ROC AUC of a ranking
  against that ground truth.
- `auroc(scores, labels)`: the Mann-Whitney AUC, ties counted half.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from scidl import interventions
from scidl.errors import ScidlError, check_int


def auroc(scores: Any, labels: Any) -> float:
    """Return the ROC AUC of `scores` for binary `labels`; ScidlError if a class is empty or a score is NaN."""
    from scipy.stats import rankdata  # scipy only when needed: `import scidl` stays light

    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ScidlError(f"scores of shape {scores.shape} are not allowed: need one score per label {labels.shape}")
    if not np.isfinite(scores).all():
        raise ScidlError("scores with NaN or infinite values are not allowed: the AUC would be undefined")
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ScidlError("labels of one class only are not allowed: the AUC is undefined")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class PassCounter:
    """Context manager counting `model`'s forward and backward passes while it is active.

    A forward pass is one call of the model's forward (a batch of any size: `model(x)`,
    `run_with_hooks`, `run_with_cache`); a backward pass is one gradient flowing back through an
    output of such a call."""

    def __init__(self, model: torch.nn.Module) -> None:
        if not isinstance(model, torch.nn.Module):
            raise ScidlError(f"model={type(model).__name__} is not allowed: must be a torch.nn.Module")
        self.model, self.forward, self.backward = model, 0, 0

    def _counted(self, *args, **kwargs):
        output = self._forward(*args, **kwargs)
        self.forward += 1
        if isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(self._on_backward)
        return output

    def _on_backward(self, grad: Tensor) -> None:
        self.backward += 1

    def __enter__(self) -> "PassCounter":
        # the instance's forward, not a module hook: TransformerLens' run_with_hooks / run_with_cache
        # call model.forward directly, which module hooks never see
        self._forward = self.model.forward
        self.model.forward = self._counted
        return self

    def __exit__(self, *exc) -> None:
        del self.model.forward  # back to the class's forward


def localize(model, clean: Tensor, corrupt: Tensor, components: list[str], metric: Callable[[Tensor], Tensor],
             confirm: int = 7, budget: int = 10) -> pd.DataFrame:
    """Return every component ranked by responsibility for metric(clean) - metric(corrupt), found with
    at most `budget` forward passes: columns component, estimate (attribution patching), confirmed
    (activation patching, NaN where not run), score (confirmed where run, else estimate), rank.
    `table.attrs` holds the passes counted: forward, backward."""
    confirm, budget = check_int("confirm", confirm, 0), check_int("budget", budget, 2)
    if 2 + confirm > budget:
        raise ScidlError(f"confirm={confirm} is not allowed: attribution takes 2 forward passes, so at most "
                         f"{budget - 2} confirmations fit in budget={budget}")
    with PassCounter(model) as passes:
        table, clean_cache, m_clean, m_corrupt = interventions.attribution(model, clean, corrupt, components, metric)
        order = table.effect.abs().sort_values(ascending=False, kind="stable").index
        top = list(table.component[order[:confirm]])
        patched = interventions.patched_effects(model, corrupt, top, metric, clean_cache, m_clean, m_corrupt)
    confirmed = dict(zip(patched.component, patched.effect))
    out = table.rename(columns={"effect": "estimate"})
    out["confirmed"] = out.component.map(confirmed).astype(float)
    out["score"] = out.confirmed.where(out.confirmed.notna(), out.estimate)
    out = out.reindex(out.score.abs().sort_values(ascending=False, kind="stable").index).reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    if passes.forward > budget:  # cannot happen by construction; counted, so checked
        raise ScidlError(f"localize used {passes.forward} forward passes, over its budget of {budget}")
    out.attrs.update(forward=passes.forward, backward=passes.backward)
    return out


def exhaustive_ablation(model, tokens: Tensor, labels: Tensor, components: list[str], how: str = "mean") -> pd.DataFrame:
    """Return the ground truth: each component ablated (`how`) over the whole of `tokens`, its loss
    change (`effect`), sorted by its magnitude, largest first."""
    table = interventions.ablate(model, tokens, labels, components, how)
    return table.reindex(table.effect.abs().sort_values(ascending=False, kind="stable").index).reset_index(drop=True)


def localization_scores(found: pd.DataFrame, truth: pd.DataFrame, k: int = 3, important: float = 0.1) -> dict:
    """Return how well a ranking (`found`: component, score) matches the ground truth (`truth`:
    component, effect): top-k recall (the share of the k most important components found in the top
    k), Spearman correlation of |score| with |effect|, and the ROC AUC of |score| for "important"
    (|effect| >= `important` x the largest |effect|; NaN when every or no component is important).
    Magnitudes on both sides: a component whose ablation helps is as responsible as one whose hurts."""
    from scipy.stats import spearmanr

    k = check_int("k", k, 1)
    both = found[["component", "score"]].merge(truth[["component", "effect"]], on="component")
    both["effect"] = both.effect.abs()
    if len(both) != len(truth) or len(both) != len(found) or k > len(both):
        raise ScidlError(f"found ({len(found)}) and truth ({len(truth)}) must rank the same components, at least k={k}")
    if not both.effect.max() > 0:
        raise ScidlError("truth whose effects are all 0 is not allowed: nothing is responsible")
    top = lambda col: set(both.reindex(both[col].abs().sort_values(ascending=False, kind="stable").index).component[:k])
    label = both.effect >= important * both.effect.max()
    return {"k": k, "topk_recall": len(top("score") & top("effect")) / k,
            "spearman": float(spearmanr(both.score.abs(), both.effect).statistic),
            "auroc": auroc(both.score.abs(), label) if 0 < label.sum() < len(label) else math.nan,
            "n_important": int(label.sum())}

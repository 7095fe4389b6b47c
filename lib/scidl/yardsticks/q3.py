"""Q3: find the responsible part with at most ten forward passes, scored against a ground truth of
the same estimand computed by a different procedure on held-out inputs, beside baselines.

**The estimand** (one for every phenomenon): *noising*. For a clean input x and its paired corrupted
input x' (the phenomenon's corruption: another random input, a removed carry, ...), a component's
effect is how much the answer's cross-entropy on x rises when that component's activation is
replaced by its value on x', as a share of the rise when the whole input is replaced:
    effect(c) = (L(x with c from x') - L(x)) / (L(x') - L(x)),   L against x's answer.

**The ground truth** (`truth`): that effect computed exactly, one patched forward per candidate, on
held-out inputs (the test split) the methods never see. Not counted against any budget.

**A phenomenon plugs in** by returning a `Q3Task` from its `q3_task(run, ...)`: the candidates (at a
granularity several times larger than the budget: heads and single neurons), the components that
are bottlenecks by construction (excluded, their truth shown apart), the methods' inputs (training
split) and the held-out ones, and the answer position.

**Methods** get a copy of the model through `protocol.hand_over`, so every pass from hand-over counts,
and `Q3Task.inputs()`, so they never see the held-out pairs; `budget(model, task)` is `forward` passes
of the task's batch, as many rows and as many forwards' FLOPs:
- `atp_confirm` (scidl's): attribution patching (Nanda 2023; Syed et al. 2023) estimates every effect
  from 2 forwards and 1 backward (4 forwards' FLOPs); the top ones are then patched exactly, one
  forward each, as many as the budget's passes, rows and FLOPs allow (6 of 10).
- `atp`: attribution patching alone (2 forwards + 1 backward), the peer at a smaller budget.
- `structural_confirm`: the structural guess at the same budget: its first 7 candidates patched exactly.
- `structural`: no pass at all: the candidates by position (nearest the answer first), then type
  (heads before neurons), then index.
- `random`: a seeded random ranking (no pass).
- `exhaustive`: exact patching of every candidate on the method's inputs: the unbounded ceiling,
  shown with what it spends (over budget by design).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from scidl import interventions
from scidl.errors import ScidlError, check_frame, check_int, check_mapping, check_names, check_number, check_type
from scidl.train import cross_entropy
from scidl.yardsticks.protocol import Budget, Usage, auroc, hand_over, pooled_recall

ESTIMAND = ("noising: the rise in the answer's cross-entropy on a clean input when the component's activation "
            "is replaced by its value on the paired corrupted input, as a share of the rise when the whole input "
            "is replaced; truth: exact patching of every candidate on held-out (test-split) pairs")


@dataclass(frozen=True)
class Q3Task:
    """One model's Q3 problem, as its phenomenon states it (see the module docstring).

    clean/corrupt/labels: the methods' paired inputs (training split) and the clean answers;
    truth_clean/truth_corrupt/truth_labels: the held-out pairs of the ground truth; answer_pos: the
    position whose logits are the answer; candidates: the components ranked; excluded: component ->
    why it is a bottleneck by construction (scored apart); corruption: what x' is, in words."""

    phenomenon: str
    corruption: str
    candidates: tuple[str, ...]
    excluded: Mapping[str, str]
    clean: Tensor
    corrupt: Tensor
    labels: Tensor
    truth_clean: Tensor
    truth_corrupt: Tensor
    truth_labels: Tensor
    answer_pos: int
    estimand: str = ESTIMAND
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_names("candidates", self.candidates, min_len=2)
        for c in self.candidates:
            interventions.parse_component(c)  # 'hook', 'hook:i' or 'hook:i,j', optionally '@pos'
            if not interventions.parse_component(c)[0].startswith(("blocks.", "hook_")):
                raise ScidlError(f"candidates[]={c!r} is not allowed: not a hook point name ('blocks.L....' or 'hook_...')")
        check_mapping("excluded", self.excluded, "a mapping component -> why it is scored apart")
        if set(self.excluded) & set(self.candidates):
            raise ScidlError(f"excluded={sorted(set(self.excluded) & set(self.candidates))} is not allowed: a "
                             "bottleneck is scored apart, never among the candidates")
        for a, b, lab in (("clean", "corrupt", "labels"), ("truth_clean", "truth_corrupt", "truth_labels")):
            x, y, z = getattr(self, a), getattr(self, b), getattr(self, lab)
            if not all(isinstance(t, Tensor) for t in (x, y, z)) or x.shape != y.shape or len(z) != len(x) or len(x) == 0:
                raise ScidlError(f"{a}/{b}/{lab} are not allowed: need non-empty paired tensors of one length")
        check_int("answer_pos", self.answer_pos, 0, self.clean.shape[1] - 1 if self.clean.dim() > 1 else 0)
        for name in ("labels", "truth_labels"):
            lab = getattr(self, name)
            if lab.dtype not in (torch.int64, torch.int32) or lab.dim() != 1 or (len(lab) and int(lab.min()) < 0):
                raise ScidlError(f"{name}={lab!r:.120} is not allowed: must be a 1-d tensor of class indices (integers >= 0)")

    @property
    def batch(self) -> int:
        return len(self.clean)

    def inputs(self) -> "Q3Inputs":
        """Return what a method may see: the candidates and the methods' pairs, never the held-out ones."""
        return Q3Inputs(tuple(self.candidates), self.clean, self.corrupt, self.labels, self.answer_pos)

    def metric(self, truth: bool = False) -> Callable[[Tensor], Tensor]:
        """Return logits -> the mean cross-entropy (float64) of the clean answers at the answer position."""
        return _answer_loss(self.truth_labels if truth else self.labels, self.answer_pos)


@dataclass(frozen=True)
class Q3Inputs:
    """A method's view of a Q3Task: candidates, its paired inputs and clean answers, the answer position."""

    candidates: tuple[str, ...]
    clean: Tensor
    corrupt: Tensor
    labels: Tensor
    answer_pos: int

    @property
    def batch(self) -> int:
        return len(self.clean)

    def metric(self) -> Callable[[Tensor], Tensor]:
        return _answer_loss(self.labels, self.answer_pos)


def _answer_loss(labels: Tensor, pos: int) -> Callable[[Tensor], Tensor]:
    return lambda logits: cross_entropy(logits[:, pos], labels)


def budget(model, task: Q3Task, forward: int = 10) -> Budget:
    """Return the Q3 budget for `model` on `task`: `forward` passes of at most the task's batch each
    (rows = forward x batch) and FLOPs = forward x those of one forward over the batch (measured here,
    not counted against any method), so a backward pass (about two forwards' FLOPs) is paid for."""
    forward = check_int("forward", forward, 2)
    check_type("task", task, Q3Task, "a Q3Task (the phenomenon's q3_task)")

    def one(m):
        with torch.no_grad():
            m(task.clean)
    _, usage = hand_over(one, model)
    return Budget(forward=forward, rows=forward * task.batch, flops=forward * usage.flops)


# -- methods: each (model, inputs: Q3Inputs, budget) -> DataFrame(component, score), run under hand_over --

def atp(model, inputs: Q3Inputs, budget: Budget) -> pd.DataFrame:
    """Attribution patching alone, noising direction: 2 forwards and 1 backward."""
    table = interventions.attribution(model, inputs.corrupt, inputs.clean, list(inputs.candidates), inputs.metric())[0]
    return table.rename(columns={"effect": "score"})


def _spare(inputs: Q3Inputs, budget: Budget, spent: int) -> int:
    """Return how many one-batch forwards are left after `spent` forward-equivalents (a backward pass
    counts as two: its FLOPs), by passes, rows and FLOPs alike."""
    left = budget.forward - spent
    if budget.rows is not None:
        left = min(left, budget.rows // inputs.batch - spent)
    return max(left, 0)


def atp_confirm(model, inputs: Q3Inputs, budget: Budget) -> pd.DataFrame:
    """Attribution patching (2 forwards + 1 backward, which costs two forwards' FLOPs: 4 in all), then
    exact patching of its top estimates with what the budget has left, one forward each (6 of 10).
    Score: the exact effect where confirmed, else the estimate."""
    table, cache, m_corrupt, m_clean = interventions.attribution(
        model, inputs.corrupt, inputs.clean, list(inputs.candidates), inputs.metric())
    order = table.effect.abs().sort_values(ascending=False, kind="stable").index
    top = list(table.component[order[:_spare(inputs, budget, 4)]])
    patched = interventions.patched_effects(model, inputs.clean, top, inputs.metric(), cache, m_corrupt, m_clean)
    exact = dict(zip(patched.component, patched.effect))
    out = table.rename(columns={"effect": "estimate"})
    out["score"] = [exact.get(c, e) for c, e in zip(out.component, out.estimate)]
    out["confirmed"] = out.component.isin(exact)
    return out


def structural_confirm(model, inputs: Q3Inputs, budget: Budget) -> pd.DataFrame:
    """The structural guess at the same budget: exact patching of the structural order's first
    candidates (3 forwards for the caches and metrics, then one per candidate: 7 of 10); the rest
    follow in structural order below them."""
    order = structural_order(inputs.candidates)
    top = order[:_spare(inputs, budget, 3)]
    exact = interventions.activation_patching(model, inputs.corrupt, inputs.clean, top, inputs.metric())
    scored = dict(zip(exact.component, exact.effect))
    floor = min((abs(v) for v in scored.values()), default=1.0)
    rest = [c for c in order if c not in scored]  # below every confirmed one, in structural order
    tail = {c: floor * 1e-6 * (len(rest) - i) / len(rest) for i, c in enumerate(rest)}
    return pd.DataFrame({"component": order, "score": [scored[c] if c in scored else tail[c] for c in order]})


def exhaustive(model, inputs: Q3Inputs, budget: Budget) -> pd.DataFrame:
    """Exact patching of every candidate on the method's inputs (the ceiling; spends 3 + N passes)."""
    table = interventions.activation_patching(model, inputs.corrupt, inputs.clean, list(inputs.candidates),
                                              inputs.metric())
    return table.rename(columns={"effect": "score"})[["component", "score"]]


def structural_order(candidates) -> list[str]:
    """Return the candidates by position (highest, i.e. nearest the answer, first), then type
    (attention before MLP before anything else), then index: the guess that reads no model."""
    candidates = check_names("candidates", candidates)

    def key(c: str):
        hook, index, pos = interventions.parse_component(c)
        kind = 0 if ".attn." in hook else 1 if ".mlp." in hook else 2
        first = index if isinstance(index, int) else (index[0] if index else -1)
        return (-(pos if pos is not None else -1), kind, hook, first)
    return sorted(candidates, key=key)


def structural(model, inputs: Q3Inputs, budget: Budget) -> pd.DataFrame:
    order = structural_order(inputs.candidates)
    n = len(order)
    return pd.DataFrame({"component": order, "score": np.arange(n, 0, -1, dtype=float)})


def random_method(seed: int) -> Callable[..., pd.DataFrame]:
    """Return a method ranking the candidates in a random order drawn with `seed`."""
    seed = check_int("seed", seed, 0)

    def ranked(model, inputs: Q3Inputs, budget: Budget) -> pd.DataFrame:
        perm = torch.randperm(len(inputs.candidates), generator=torch.Generator().manual_seed(seed)).tolist()
        order = [inputs.candidates[i] for i in perm]
        return pd.DataFrame({"component": order, "score": np.arange(len(order), 0, -1, dtype=float)})
    return ranked


METHODS: dict[str, Callable[..., pd.DataFrame]] = {
    "atp+confirm (scidl)": atp_confirm, "atp (peer)": atp, "structural+confirm": structural_confirm,
    "structural": structural, "exhaustive (ceiling)": exhaustive}


# -- ground truth and scores -------------------------------------------------------------------------

def truth(model, task: Q3Task) -> pd.DataFrame:
    """Return the ground truth: exact noising of every candidate and every excluded component on the
    held-out pairs; columns component, effect, excluded."""
    comps = [*task.candidates, *task.excluded]
    table = interventions.activation_patching(model, task.truth_corrupt, task.truth_clean, comps, task.metric(truth=True))
    table["excluded"] = table.component.isin(list(task.excluded))
    return table[["component", "effect", "excluded"]]


def localization_scores(found: pd.DataFrame, truth: pd.DataFrame, k: int = 3, important: float = 0.1) -> dict:
    """Return how well a ranking (`found`: component, score) matches the ground truth (`truth`:
    component, effect): top-k hits and recall (the share of the k largest |effect| found in the
    top k by |score|), Spearman correlation of |score| with |effect|, and the ROC AUC of |score| for
    "important" (|effect| >= `important` x the largest; NaN when every or no component is)."""
    from scipy.stats import spearmanr

    k = check_int("k", k, 1)
    check_number("important", important, 0, 1, low_open=True)
    for name, frame, col in (("found", found, "score"), ("truth", truth, "effect")):
        check_frame(name, frame, ["component"], finite=[col])  # a ranking needs finite values
        dup = frame.component[frame.component.duplicated()]
        if len(dup):
            raise ScidlError(f"{name}.component={dup.iloc[0]!r} is not allowed twice: each component is ranked once")
    both = found[["component", "score"]].merge(truth[["component", "effect"]], on="component")
    both["effect"] = both.effect.abs()
    if len(both) != len(truth) or len(both) != len(found) or k > len(both):
        raise ScidlError(f"found ({len(found)}) and truth ({len(truth)}) must rank the same components, at least k={k}")
    if not both.effect.max() > 0:
        raise ScidlError("truth whose effects are all 0 is not allowed: nothing is responsible")
    top = lambda col: set(both.reindex(both[col].abs().sort_values(ascending=False, kind="stable").index).component[:k])
    label = both.effect >= important * both.effect.max()
    hits = len(top("score") & top("effect"))
    spear = spearmanr(both.score.abs(), both.effect).statistic if both.score.abs().nunique() > 1 else math.nan
    return {"k": k, "hits": hits, "topk_recall": hits / k, "spearman": float(spear),
            "auroc": auroc(both.score.abs(), label) if 0 < label.sum() < len(label) else math.nan,
            "n_important": int(label.sum())}


def score_model(model, task: Q3Task, budget: Budget, methods: Mapping[str, Callable] | None = None,
                k: int = 3, n_random: int = 20) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (one row per method: its scores against the truth and its usage from hand-over, the
    truth table). Random rankings are `n_random` seeded draws, reported as one row (hits averaged)."""
    check_type("task", task, Q3Task, "a Q3Task (the phenomenon's q3_task)")
    check_type("budget", budget, Budget, "a Budget (see q3.budget)")
    methods = check_mapping("methods", METHODS if methods is None else methods,
                            "a mapping of name -> method(model, inputs, budget)", min_len=0)
    for name, method in methods.items():
        if not callable(method):
            raise ScidlError(f"methods[{name!r}]={method!r} is not allowed: must be a method(model, inputs, budget)")
    k = check_int("k", k, 1)
    n_random = check_int("n_random", n_random, 1)
    gt = truth(model, task)
    live = gt[~gt.excluded]
    rows = []
    view = task.inputs()  # the methods never see the held-out pairs
    for name, method in methods.items():
        found, usage = hand_over(method, model, view, budget)
        rows.append({"method": name, **localization_scores(found, live, k), **_usage(usage, budget)})
    draws = []
    for seed in range(n_random):
        found, usage = hand_over(random_method(seed), model, view, budget)
        draws.append(localization_scores(found, live, k))
    rows.append({"method": "random", "k": k, "hits": float(np.mean([d["hits"] for d in draws])),
                 "topk_recall": float(np.mean([d["topk_recall"] for d in draws])),
                 "spearman": float(np.nanmean([d["spearman"] for d in draws])),
                 "auroc": float(np.nanmean([d["auroc"] for d in draws])), "n_important": draws[0]["n_important"],
                 **_usage(usage, budget)})
    return pd.DataFrame(rows), gt


def _usage(usage: Usage, budget: Budget) -> dict:
    return {"forward": usage.forward, "backward": usage.backward, "rows": usage.rows, "flops": usage.flops,
            "seconds": usage.seconds, "within_budget": usage.within(budget), "over": "; ".join(usage.over(budget))}


def summarize(per_model: pd.DataFrame, k: int = 3) -> pd.DataFrame:
    """Return one row per method over models: pooled top-k recall with its Clopper-Pearson interval
    (the k slots of one model are counted as k trials, so the interval is narrower than one over
    models would be; random: the expected recall over its draws, no interval), mean Spearman,
    models within budget, and the largest usage seen."""
    k = check_int("k", k, 1)
    check_frame("per_model", per_model, ["method", "within_budget"], finite=["hits", "forward", "rows", "flops"])
    rows = []
    for name, g in per_model.groupby("method", sort=False):
        whole = bool((g.hits == g.hits.round()).all())  # random rows hold mean hits over draws: no binomial
        pooled = pooled_recall([int(h) for h in g.hits], k) if whole else {"low": math.nan, "high": math.nan}
        rows.append({"method": name, "models": len(g), "recall": float(g.hits.sum() / (k * len(g))),
                     "low": pooled["low"], "high": pooled["high"], "spearman": float(g.spearman.mean()),
                     "within_budget": int(g.within_budget.sum()), "max_forward": int(g.forward.max()),
                     "max_rows": int(g.rows.max()), "max_mflop": float(g.flops.max() / 1e6)})
    return pd.DataFrame(rows)

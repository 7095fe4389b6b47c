"""The protocol every yardstick shares: a budget counted from hand-over, the statistics scored over
many models, and the intervals they are reported with.

- `Budget(forward, rows)`: what a method may spend on a model: forward passes and examples (rows:
  the batch sizes of those passes added up). A pass over the whole input grid costs its rows, so
  "one pass" of any size cannot hide work.
- `Meter(model)`: counts, while active, every call that enters the model (its `forward` and every
  entry point in `ENTRY_POINTS`, e.g. a lookup-table `last_logits`; a call made inside another counts
  once; a submodule called outside any of them counts as a pass of its own), the rows of each, the
  backward passes through their outputs, and the FLOPs of every torch operation run in the context,
  on the model or not (torch's flop registry, as `FlopCounterMode` counts them: a forward rebuilt from
  the weights, or run on another copy, shows up here). Work done outside torch (numpy) is not seen.
- `hand_over(method, model, *args)`: runs `method(model_copy, *args)` on a copy of `model` under a
  Meter from the first instruction to the return, and returns the result with its `Usage`.
  A method that spends more than its budget is not stopped: its usage says so
  (`Usage.within(budget)` is False, `Usage.over(budget)` names what), and a score that needs the
  budget reads that.
- `pooled_recall(hits, k)`, `share(passed)`: a proportion over models with its Clopper-Pearson
  interval (`scidl.hypotheses.proportion_ci`); `mean_interval(values)`: a mean with its t-interval.
- `auroc(scores, labels)`: the Mann-Whitney AUC, ties counted half.
"""
from __future__ import annotations

import copy
import math
import numbers
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from scidl.errors import ScidlError, check_bool, check_int, check_numbers, check_type, scalar

ENTRY_POINTS = ("forward", "last_logits")  # looked up on the model; a model may add its own in `entry_points`


def auroc(scores: Any, labels: Any) -> float:
    """Return the ROC AUC of `scores` for binary `labels`; ScidlError if a class is empty or a score is NaN."""
    from scipy.stats import rankdata  # scipy only when needed: `import scidl` stays light

    scores = np.asarray(check_numbers("scores", scores, min_len=0) if not isinstance(scores, np.ndarray) or
                        scores.dtype.kind not in "fiu" else scores, dtype=float)
    labels = _labels(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ScidlError(f"scores of shape {scores.shape} are not allowed: need one score per label {labels.shape}")
    if not np.isfinite(scores).all():
        raise ScidlError("scores with NaN or infinite values are not allowed: the AUC would be undefined")
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ScidlError("labels of one class only are not allowed: the AUC is undefined")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _labels(labels: Any) -> np.ndarray:
    """Return binary `labels` (bools, or the integers 0 and 1) as a bool array; anything else (2,
    NaN, 'no', None) is refused rather than cast with bool()."""
    if isinstance(labels, (str, bytes)) or not hasattr(labels, "__iter__"):
        raise ScidlError(f"labels={labels!r} is not allowed: must be a list of bools (or 0/1)")
    items = list(np.asarray(labels, dtype=object).ravel()) if hasattr(labels, "shape") else list(labels)
    for v in items:
        v = scalar(v)
        if not (isinstance(v, (bool, np.bool_)) or (isinstance(v, numbers.Integral) and v in (0, 1))):
            raise ScidlError(f"labels={items[:6]!r} is not allowed: must be bools (or 0/1), not {v!r}")
    return np.asarray([bool(scalar(v)) for v in items], dtype=bool)


@dataclass(frozen=True)
class Budget:
    """What a method may spend on the model it is handed: `forward` passes, `rows` examples in all
    and `flops` (None: unbounded). FLOPs are the guard nothing bypasses: a backward pass costs about
    two forwards' FLOPs, and a forward rebuilt from the weights, on a copy or submodule by submodule,
    costs its FLOPs wherever it runs. Validated on construction."""

    forward: int
    rows: int | None = None
    flops: int | None = None

    def __post_init__(self) -> None:
        check_int("forward", self.forward, 0)
        for name in ("rows", "flops"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 0)

    def text(self) -> str:
        return (f"{self.forward} forward passes" + ("" if self.rows is None else f", {self.rows} rows")
                + ("" if self.flops is None else f", {self.flops / 1e6:.0f} MFLOP"))


@dataclass(frozen=True)
class Usage:
    """What a method spent, counted from hand-over: forward and backward passes, rows (examples
    summed over the forward passes), FLOPs of every torch op it ran, wall seconds."""

    forward: int
    backward: int
    rows: int
    flops: int
    seconds: float

    def over(self, budget: Budget) -> list[str]:
        """Return what exceeds `budget` (empty when the usage fits)."""
        check_type("budget", budget, Budget, "a Budget")
        out = []
        if self.forward > budget.forward:
            out.append(f"forward {self.forward} > {budget.forward}")
        if budget.rows is not None and self.rows > budget.rows:
            out.append(f"rows {self.rows} > {budget.rows}")
        if budget.flops is not None and self.flops > budget.flops:
            out.append(f"flops {self.flops} > {budget.flops}")
        return out

    def within(self, budget: Budget) -> bool:
        return not self.over(budget)

    def text(self) -> str:
        return (f"{self.forward} fwd + {self.backward} bwd, {self.rows} rows, {self.flops / 1e6:.1f} MFLOP, "
                f"{self.seconds:.2f} s")


class _FlopCount:
    """A dispatch mode adding up the FLOPs of every op torch's flop registry knows (matmuls, convolutions,
    attention kernels), without FlopCounterMode's module tracker (whose global module hooks fail on
    TransformerLens hook points under no_grad)."""

    def __new__(cls):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        class Mode(TorchDispatchMode):
            total = 0

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                count = flop_registry.get(func._overloadpacket)
                if count is not None:
                    self.total += int(count(*args, **kwargs, out_val=out))
                return out
        return Mode()


def _batch(first: Any) -> int:
    """Return the rows a pass over `first` (its input) covers: its leading dimension, else 1."""
    return int(first.shape[0]) if isinstance(first, Tensor) and first.dim() > 0 else 1


class Meter:
    """Context manager counting what is spent on `model` while it is active (see the module docstring)."""

    def __init__(self, model: torch.nn.Module) -> None:
        if not isinstance(model, torch.nn.Module):
            raise ScidlError(f"model={type(model).__name__} is not allowed: must be a torch.nn.Module")
        self.model, self.forward, self.backward, self.rows, self.flops = model, 0, 0, 0, 0
        self._depth, self._wrapped, self._start, self.seconds = 0, [], 0.0, 0.0
        self._handles, self._side = [], None  # submodule hooks; the submodule a side entry is inside
        names = (*ENTRY_POINTS, *getattr(model, "entry_points", ()))
        self._names = [n for n in dict.fromkeys(names) if callable(getattr(model, n, None))]

    def _wrap(self, name: str) -> None:
        inner = getattr(self.model, name)

        def counted(*args, **kwargs):
            outermost = self._depth == 0
            self._depth += 1
            try:
                output = inner(*args, **kwargs)
            finally:
                self._depth -= 1
            if outermost:
                self.forward += 1
                self.rows += _batch(args[0] if args else next(iter(kwargs.values()), None))
                if isinstance(output, Tensor) and output.requires_grad:
                    output.register_hook(self._on_backward)
            return output
        setattr(self.model, name, counted)  # the instance's attribute, so direct calls of model.forward count too
        self._wrapped.append(name)

    def _on_backward(self, grad: Tensor) -> None:
        self.backward += 1

    def _enter_below(self, module, args) -> None:
        """A submodule called outside any root call (a block, a hook point: a forward assembled by
        hand) counts as a pass of its own, with its batch as rows: over-counted, never missed."""
        if self._depth == 0 and self._side is None:
            self._side = module
            self.forward += 1
            self.rows += _batch(args[0] if args else None)

    def _leave_below(self, module, args, output) -> None:
        if module is self._side:
            self._side = None

    def __enter__(self) -> "Meter":
        if any(n in vars(self.model) for n in self._names):
            raise ScidlError("model is already metered: a Meter cannot be nested on the same model")
        for name in self._names:
            self._wrap(name)
        from transformer_lens.hook_points import HookPoint

        for module in self.model.modules():  # not the hook points: a hook there changes the model's path
            if module is not self.model and not isinstance(module, HookPoint):
                self._handles += [module.register_forward_pre_hook(self._enter_below),
                                  module.register_forward_hook(self._leave_below)]
        self._flops = _FlopCount()
        self._flops.__enter__()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start
        self._flops.__exit__(*exc)
        self.flops = int(self._flops.total)
        for name in self._wrapped:
            delattr(self.model, name)  # back to the class's method
        for handle in self._handles:
            handle.remove()
        self._wrapped, self._handles = [], []

    def usage(self) -> Usage:
        return Usage(self.forward, self.backward, self.rows, self.flops, self.seconds)


def hand_over(method: Callable[..., Any], model: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[Any, Usage]:
    """Return (method(copy of model, *args, **kwargs), its Usage), everything the method does counted.

    The method gets a deep copy, so nothing it changes (hooks, gradients, weights) reaches the
    caller's model or a later method."""
    if not callable(method):
        raise ScidlError(f"method={method!r} is not allowed: must be a function (model, ...) -> result")
    mine = copy.deepcopy(model)
    with Meter(mine) as meter:
        out = method(mine, *args, **kwargs)
    return out, meter.usage()


def check_seeds(name: str, seeds: Any, minimum: int = 1) -> list[int]:
    """Return `seeds` as a list of distinct integers in [0, SEED_MAX], at least `minimum` of them;
    ScidlError naming `name` otherwise (a repeated seed is the same model twice, not two models)."""
    check_int("minimum", minimum, 0)
    if not isinstance(seeds, (list, tuple)):
        raise ScidlError(f"{name}={seeds!r} is not allowed: must be a list of seeds")
    from scidl.config import SEED_MAX

    seeds = [check_int(f"{name}[]", s, 0, SEED_MAX) for s in seeds]
    if len(seeds) < minimum or len(set(seeds)) != len(seeds):
        raise ScidlError(f"{name}={seeds!r} is not allowed: must be at least {minimum} distinct seeds")
    return seeds


def _items(name: str, values: Any) -> list:
    """Return `values` as a list if it is a list, tuple or 1-d array (a string, a mapping or a scalar is refused)."""
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__") or getattr(values, "ndim", 1) != 1:
        raise ScidlError(f"{name}={values!r:.200} is not allowed: must be a list")
    return list(values)


def share(passed: Any) -> dict[str, float]:
    """Return a proportion of booleans with its 95% Clopper-Pearson interval: {"share", "low", "high", "n"}."""
    from scidl.hypotheses import proportion_ci

    passed = [check_bool("passed[]", x) for x in _items("passed", passed)]  # n = 0 gives share NaN in [0, 1]
    p, low, high = proportion_ci(sum(passed), len(passed))
    return {"share": p, "low": low, "high": high, "n": len(passed)}


def pooled_recall(hits: Any, k: int) -> dict[str, float]:
    """Return top-k recall pooled over models (hits out of k per model) with its Clopper-Pearson interval."""
    from scidl.hypotheses import proportion_ci

    k = check_int("k", k, 1)
    hits = [check_int("hits[]", h, 0, k) for h in _items("hits", hits)]
    p, low, high = proportion_ci(sum(hits), k * len(hits))
    return {"recall": p, "low": low, "high": high, "models": len(hits)}


def mean_interval(values: Any) -> dict[str, float]:
    """Return the mean of finite `values` with its 95% t-interval ({"mean", "low", "high", "n"})."""
    from scidl.hypotheses import mean_ci

    values = check_numbers("values", _items("values", values))  # finite numbers, never bools
    mean, low, high = mean_ci(values)
    return {"mean": mean, "low": low, "high": high, "n": len(values)}
